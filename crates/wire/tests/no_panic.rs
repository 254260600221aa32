//! Parsing is total: random bytes, and random mutations of valid frames, never
//! panic a parser (debug build: overflow checks on) and never loop forever.

mod common;

use common::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;
use ustack_wire::*;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn tcp_options_loop(mut opts: &[u8]) {
    while !opts.is_empty() {
        match TcpOption::parse(opts) {
            Ok((rest, opt)) => {
                assert!(rest.len() < opts.len(), "option parse must consume input");
                let _ = opt.buffer_len();
                opts = rest;
            }
            Err(_) => break,
        }
    }
}

fn check_tcp(b: &[u8]) {
    if let Ok(p) = TcpPacket::new_checked(b) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len());
        let _ = (p.flags(), p.fin(), p.syn(), p.rst(), p.psh(), p.ack(), p.urg(), p.ece(), p.cwr());
        let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options(), p.payload());
        let _ = p.verify_checksum(A, B);
        tcp_options_loop(p.options());
        for mode in [ChecksumMode::Verify, ChecksumMode::Ignore] {
            if let Ok(r) = TcpRepr::parse(&p, A, B, mode) {
                assert!(r.header_len() <= 60);
                let _ = (r.buffer_len(), r.segment_len());
            }
        }
    }
    let _ = TcpRepr::parse(&TcpPacket::new_unchecked(b), A, B, ChecksumMode::Ignore);
    tcp_options_loop(b);
}

fn check_udp(b: &[u8]) {
    if let Ok(p) = UdpPacket::new_checked(b) {
        let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.payload());
        let _ = p.verify_checksum(A, B);
        let _ = UdpRepr::parse(&p, A, B, ChecksumMode::Verify);
    }
    let _ = UdpRepr::parse(&UdpPacket::new_unchecked(b), A, B, ChecksumMode::Ignore);
}

fn check_icmp(b: &[u8]) {
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident(), p.echo_seq_no());
        let _ = (p.next_hop_mtu(), p.data(), p.verify_checksum(), p.is_error());
        for mode in [ChecksumMode::Verify, ChecksumMode::Ignore] {
            if let Ok(r) = Icmpv4Repr::parse(&p, mode) {
                let _ = r.buffer_len();
            }
        }
    }
    let _ = Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(b), ChecksumMode::Ignore);
}

fn check_ipv4(b: &[u8]) {
    for p in [Ipv4Packet::new_checked(b), Ipv4Packet::new_checked_header(b)].into_iter().flatten() {
        let _ = (p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident());
        let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.ttl(), p.protocol());
        let _ = (p.checksum(), p.src_addr(), p.dst_addr(), p.options(), p.verify_checksum());
        let _ = Ipv4Repr::parse(&p, ChecksumMode::Verify);
        let _ = Ipv4Repr::parse(&p, ChecksumMode::Ignore);
        let payload = p.payload();
        check_tcp(payload);
        check_udp(payload);
        check_icmp(payload);
    }
    let _ = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(b), ChecksumMode::Ignore);
}

fn check_arp(b: &[u8]) {
    if let Ok(p) = ArpPacket::new_checked(b) {
        let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
        let _ = (p.operation(), p.buffer_len());
        let _ = (p.source_hardware_addr(), p.source_protocol_addr());
        let _ = (p.target_hardware_addr(), p.target_protocol_addr());
        let _ = ArpRepr::parse(&p);
    }
    let _ = ArpRepr::parse(&ArpPacket::new_unchecked(b));
}

fn everything(b: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(b) {
        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_id(), f.vlan_pcp(), f.header_len());
        let _ = EthernetRepr::parse(&f);
        check_ipv4(f.payload());
        check_arp(f.payload());
    }
    let _ = EthernetRepr::parse(&EthernetFrame::new_unchecked(b));
    check_ipv4(b);
    check_arp(b);
    check_tcp(b);
    check_udp(b);
    check_icmp(b);
}

/// Valid frames of every kind to mutate.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (ethernet(EtherType::Ipv4), ipv4(IpProtocol::Tcp, 0), tcp_case(14)).prop_map(|(e, i, c)| {
            let t = c.repr();
            let mut buf = vec![0u8; build::tcp_frame_len(&e, &t)];
            build::tcp_frame(&mut buf, &e, &i, &t).unwrap();
            buf
        }),
        (
            ethernet(EtherType::Ipv4),
            ipv4(IpProtocol::Tcp, 0),
            any::<(u16, u16)>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(e, i, (sp, dp), payload)| {
                let mut buf = vec![0u8; build::udp_frame_len(&e, payload.len())];
                let u = UdpRepr { src_port: sp, dst_port: dp };
                build::udp_frame(&mut buf, &e, &i, &u, &payload).unwrap();
                buf
            }),
        (ethernet(EtherType::Ipv4), ipv4(IpProtocol::Tcp, 0), ipv4(IpProtocol::Tcp, 0), any::<u8>()).prop_map(
            |(e, i, quoted, code)| {
                let data = [1, 2, 3, 4, 5, 6, 7, 8];
                let r = Icmpv4Repr::DstUnreachable {
                    reason: Icmpv4DstUnreachable::Other(code),
                    header: Ipv4Repr { payload_len: 100, ..quoted },
                    data: &data,
                };
                let mut buf = vec![0u8; build::icmpv4_frame_len(&e, &r)];
                build::icmpv4_frame(&mut buf, &e, &i, &r).unwrap();
                buf
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
        everything(&b);
    }

    #[test]
    fn mutated_frames_never_panic(
        mut frame in valid_frame(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        everything(&frame);
        for (at, v) in edits {
            let n = frame.len();
            frame[at % n] = v;
        }
        everything(&frame);
        let keep = cut % (frame.len() + 1);
        everything(&frame[..keep]);
    }

    #[test]
    fn random_tcp_headers_never_panic(mut b in proptest::collection::vec(any::<u8>(), 20..80), doff in 0u8..16) {
        // Force plausible data offsets so the option loop really runs.
        b[12] = doff << 4;
        check_tcp(&b);
    }

    #[test]
    fn random_ipv4_headers_never_panic(mut b in proptest::collection::vec(any::<u8>(), 20..100), ihl in 0u8..16, len in any::<u8>()) {
        b[0] = 0x40 | ihl;
        b[2] = 0;
        b[3] = len;
        check_ipv4(&b);
    }
}
