//! UDP over IPv6 between two whole stacks on the in-memory link: echoes of
//! several sizes (fragmented past the MTU, up to the largest IPv6 payload)
//! checked byte for byte, dual-stack and address-bound sockets, the zero
//! checksum RFC 8200 §8.1 forbids, ICMPv6 port unreachable under the rate
//! limit, and the receive accounting kept exact throughout.

mod common;

use common::*;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use ustack_core::phy::RxMeta;
use ustack_core::{BindError, UdpSendError, MAX_UDP6_PAYLOAD};
use ustack_wire::{
    ChecksumMode, EtherType, EthernetFrame, EthernetRepr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN,
};

/// Turn (bounded) until `done` holds.
fn turn_until(p: &mut Pair, what: &str, mut done: impl FnMut(&mut Pair) -> bool) {
    for _ in 0..2000 {
        if done(p) {
            return;
        }
        step(p);
    }
    panic!("{what}: not within 2000 turns");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn assert_accounted(p: &Pair) {
    assert_eq!(p.a.counters().unaccounted_frames(), 0, "A: {:?}", p.a.counters());
    assert_eq!(p.b.counters().unaccounted_frames(), 0, "B: {:?}", p.b.counters());
}

#[test]
fn udp_echo_over_ipv6_of_every_size_up_to_the_largest_payload() {
    let mut p = pair6();
    let sa = p.a.udp_bind(0).unwrap();
    let a_port = p.a.udp_local_port(sa).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    let dst = SocketAddrV6::new(B6, 7, 0, 0);
    let sizes = [1, 18, 512, 1232, 1452, 1453, 3000, 9000, MAX_UDP6_PAYLOAD];
    let mut buf = vec![0u8; 70_000];
    for (i, &len) in sizes.iter().enumerate() {
        let data = pattern(len, i as u8);
        p.a.udp_send_to(sa, dst, &data).unwrap();
        let mut got = None;
        turn_until(&mut p, &format!("{len} bytes at B"), |p| {
            got = p.b.udp_recv_from(sb, &mut buf);
            got.is_some()
        });
        let (n, from) = got.unwrap();
        assert_eq!((n, from), (len, SocketAddr::V6(SocketAddrV6::new(A6, a_port, 0, 0))));
        assert!(buf[..n] == data[..], "{len} bytes arrived altered");
        p.b.udp_send_to(sb, from, &buf[..n]).unwrap();
        let mut back = None;
        turn_until(&mut p, &format!("{len}-byte echo at A"), |p| {
            back = p.a.udp_recv_from(sa, &mut buf);
            back.is_some()
        });
        assert_eq!(back.unwrap(), (len, SocketAddr::V6(dst)));
        assert!(buf[..len] == data[..], "{len}-byte echo came back altered");
    }
    let (ca, cb) = (p.a.counters(), p.b.counters());
    assert_eq!((ca.udp_tx, cb.udp_rx, cb.udp_tx, ca.udp_rx), (9, 9, 9, 9));
    // 1453 bytes and up do not fit 1500 with the IPv6 and UDP headers.
    assert!(ca.ipv6_frag_tx > 0 && cb.ipv6_frag_tx > 0, "fragmented both ways");
    assert_eq!(cb.ipv6_reassembled, 4, "B put the four large datagrams back together");
    assert_eq!(cb.drop_udp_checksum + cb.drop_udp6_zero_checksum + cb.drop_udp_no_socket, 0);
    // One more byte does not fit an IPv6 payload: refused, nothing queued.
    let e = p.a.udp_send_to(sa, dst, &vec![0; MAX_UDP6_PAYLOAD + 1]).unwrap_err();
    assert_eq!(e, UdpSendError::TooBig { max: 65_527 });
    assert_accounted(&p);
}

#[test]
fn datagrams_carry_one_flow_label_and_a_checksum() {
    let mut p = pair6();
    let sa = p.a.udp_bind(5000).unwrap();
    p.b.udp_bind(7).unwrap();
    // Resolve B first, so what A sends next leaves at once.
    p.a.udp_send_to(sa, SocketAddrV6::new(B6, 7, 0, 0), b"warm").unwrap();
    turn_until(&mut p, "warm-up", |p| p.b.counters().udp_rx == 1);
    for i in 0..3u8 {
        p.a.udp_send_to(sa, SocketAddrV6::new(B6, 7, 0, 0), &[i; 100]).unwrap();
    }
    let mut keep = Capture::default();
    p.a.transmit(p.now, &mut keep);
    assert_eq!(keep.frames.len(), 3);
    let mut labels = Vec::new();
    for f in &keep.frames {
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!((ip.src_addr, ip.dst_addr, ip.next_header), (A6, B6, IpProtocol::Udp));
        let udp = UdpPacket::new_checked(&eth.payload()[IPV6_HEADER_LEN..]).unwrap();
        assert_ne!(udp.checksum(), 0);
        assert!(udp.verify_checksum(A6, B6));
        labels.push(ip.flow_label);
    }
    assert!(labels.iter().all(|&l| l == labels[0] && l != 0 && l < 1 << 20), "{labels:?}");
}

#[test]
fn dual_stack_and_address_bound_sockets() {
    let mut p = pair6();
    let client = p.a.udp_bind(0).unwrap();
    let dual = p.b.udp_bind(7).unwrap();
    let v4_only = p.b.udp_bind_addr(SocketAddrV4::new([0, 0, 0, 0].into(), 8).into()).unwrap();
    let on_b6 = p.b.udp_bind_addr(SocketAddrV6::new(B6, 9, 0, 0).into()).unwrap();
    let mut buf = [0u8; 64];
    // The dual-stack socket hears both versions; so does an IPv4-mapped destination.
    p.a.udp_send_to(client, SocketAddrV6::new(B6, 7, 0, 0), b"six").unwrap();
    p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 7), b"four").unwrap();
    p.a.udp_send_to(client, SocketAddrV6::new(B_IP.to_ipv6_mapped(), 7, 0, 0), b"mapped").unwrap();
    turn_until(&mut p, "three datagrams", |p| p.b.udp_rx_queued(dual) == 3);
    let mut from = Vec::new();
    while let Some((n, f)) = p.b.udp_recv_from(dual, &mut buf) {
        from.push((buf[..n].to_vec(), f.ip()));
    }
    assert_eq!(
        from,
        [(b"six".to_vec(), IpAddr::V6(A6)), (b"four".to_vec(), A_IP.into()), (b"mapped".to_vec(), A_IP.into())]
    );
    // 0.0.0.0 takes IPv4 only; IPv6 to that port finds no socket.
    p.a.udp_send_to(client, SocketAddrV6::new(B6, 8, 0, 0), b"x").unwrap();
    p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 8), b"y").unwrap();
    // A socket bound to B6 takes what is sent to B6, not B's IPv4 address.
    p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 9), b"z").unwrap();
    p.a.udp_send_to(client, SocketAddrV6::new(B6, 9, 0, 0), b"w").unwrap();
    turn_until(&mut p, "y and w", |p| p.b.udp_rx_queued(v4_only) == 1 && p.b.udp_rx_queued(on_b6) == 1);
    assert_eq!(p.b.udp_recv_from(v4_only, &mut buf).map(|(n, _)| buf[..n].to_vec()), Some(b"y".to_vec()));
    assert_eq!(p.b.udp_recv_from(on_b6, &mut buf).map(|(n, _)| buf[..n].to_vec()), Some(b"w".to_vec()));
    turn_until(&mut p, "both refusals", |p| p.b.counters().drop_udp_no_socket == 2);
    // Replies from the bound socket leave from its address.
    p.b.udp_send_to(on_b6, SocketAddrV6::new(A6, p.a.udp_local_port(client).unwrap(), 0, 0), b"r").unwrap();
    turn_until(&mut p, "the reply", |p| p.a.udp_rx_queued(client) == 1);
    assert_eq!(p.a.udp_recv_from(client, &mut buf).map(|(_, f)| f.ip()), Some(IpAddr::V6(B6)));
    // Binding to an address the stack does not have is refused.
    let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 99);
    assert_eq!(
        p.b.udp_bind_addr(SocketAddrV6::new(other, 10, 0, 0).into()),
        Err(BindError::AddrNotAvailable(other.into()))
    );
    assert_accounted(&p);
}

#[test]
fn an_ipv4_only_reader_discards_ipv6_senders_and_counts_them() {
    let mut p = pair6();
    let client = p.a.udp_bind(0).unwrap();
    let dual = p.b.udp_bind(7).unwrap();
    p.a.udp_send_to(client, SocketAddrV6::new(B6, 7, 0, 0), b"six").unwrap();
    p.a.udp_send_to(client, SocketAddrV4::new(B_IP, 7), b"four").unwrap();
    turn_until(&mut p, "both datagrams", |p| p.b.udp_rx_queued(dual) == 2);
    let got = p.b.udp_recv_with(dual, |data, from: SocketAddrV4| (data.to_vec(), from));
    assert_eq!(got.map(|(d, f)| (d, *f.ip())), Some((b"four".to_vec(), A_IP)));
    assert_eq!(p.b.counters().drop_udp_ipv6_to_ipv4_reader, 1);
    assert_accounted(&p);
}

/// A UDP/IPv6 frame from A to B as given (checksum as `checksum` says).
fn udp6_frame(dst_port: u16, payload: &[u8], checksum: ChecksumMode) -> Vec<u8> {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let mut f = vec![0u8; ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + udp_len];
    let eth = EthernetRepr { src_addr: A_MAC, dst_addr: B_MAC, ethertype: EtherType::Ipv6, vlan_id: None };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let ip = Ipv6Repr {
        src_addr: A6,
        dst_addr: B6,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    let l3 = &mut f[ETHERNET_HEADER_LEN..];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut l3[..IPV6_HEADER_LEN]));
    let repr = UdpRepr { src_port: 4000, dst_port };
    let udp = &mut l3[IPV6_HEADER_LEN..];
    repr.emit(&mut UdpPacket::new_unchecked(udp), A6, B6, payload.len(), |b| b.copy_from_slice(payload), checksum);
    f
}

#[test]
fn a_zero_checksum_over_ipv6_is_dropped_and_counted() {
    let mut p = pair6();
    let sb = p.b.udp_bind(7).unwrap();
    let mut out = Capture::default();
    let now = p.now;
    p.b.receive(now, &udp6_frame(7, b"no checksum", ChecksumMode::Ignore), RxMeta::default(), &mut out);
    assert_eq!(p.b.counters().drop_udp6_zero_checksum, 1);
    assert_eq!(p.b.udp_rx_queued(sb), 0);
    // The same datagram with its checksum is taken.
    p.b.receive(now, &udp6_frame(7, b"checksum", ChecksumMode::Verify), RxMeta::default(), &mut out);
    assert_eq!(p.b.udp_rx_queued(sb), 1);
    // A wrong one is dropped as wrong.
    let mut bad = udp6_frame(7, b"checksum", ChecksumMode::Verify);
    *bad.last_mut().unwrap() ^= 1;
    p.b.receive(now, &bad, RxMeta::default(), &mut out);
    assert_eq!(p.b.counters().drop_udp_checksum, 1);
    assert!(out.frames.is_empty(), "no answer to any of them");
    assert_accounted(&p);
}

#[test]
fn a_closed_port_answers_port_unreachable_within_the_rate_limit() {
    let mut p = pair6();
    // Let B learn A's link address first: the errors then leave at once.
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    p.b.udp_send_to(sb, SocketAddrV6::new(A6, p.a.udp_local_port(sa).unwrap(), 0, 0), b"hi").unwrap();
    turn_until(&mut p, "B resolves A", |p| p.a.udp_rx_queued(sa) == 1);
    let mut out = Capture::default();
    let now = p.now;
    let burst = 50; // Ipv6Config's icmp_error_burst
    for i in 0..burst + 20 {
        p.b.receive(now, &udp6_frame(9, &[i as u8; 40], ChecksumMode::Verify), RxMeta::default(), &mut out);
    }
    let c = p.b.counters();
    assert_eq!(c.drop_udp_no_socket, burst + 20);
    assert_eq!((c.icmpv6_errors_sent, c.icmpv6_errors_rate_limited), (burst, 20));
    assert_eq!(out.frames.len() as u64, burst);
    let eth = EthernetFrame::new_checked(&out.frames[0][..]).unwrap();
    let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!((ip.src_addr, ip.dst_addr), (B6, A6));
    let icmp = Icmpv6Packet::new_checked(&eth.payload()[IPV6_HEADER_LEN..]).unwrap();
    let repr = Icmpv6Repr::parse(&icmp, B6, A6, ChecksumMode::Verify).unwrap();
    let Icmpv6Repr::DstUnreachable { reason, header, data } = repr else { panic!("not unreachable: {repr:?}") };
    assert_eq!(reason, Icmpv6DstUnreachable::PortUnreachable);
    assert_eq!((header.src_addr, header.dst_addr), (A6, B6));
    assert_eq!(UdpPacket::new_checked(data).unwrap().dst_port(), 9, "the quote is the datagram");
    assert_accounted(&p);
}

#[test]
fn off_link_datagrams_go_through_the_static_gateway() {
    let mut p = pair6_with(|cfg| cfg.gateway = Some(B6));
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    // Resolve the gateway (B) on the way.
    p.a.udp_send_to(sa, SocketAddrV6::new(B6, 7, 0, 0), b"hi").unwrap();
    turn_until(&mut p, "B resolved", |p| p.b.udp_rx_queued(sb) == 1);
    let far = Ipv6Addr::new(0x2001, 0xdb8, 0xfa, 0, 0, 0, 0, 1);
    p.a.udp_send_to(sa, SocketAddrV6::new(far, 7, 0, 0), b"far").unwrap();
    let mut keep = Capture::default();
    p.a.transmit(p.now, &mut keep);
    assert_eq!(keep.frames.len(), 1);
    let eth = EthernetFrame::new_checked(&keep.frames[0][..]).unwrap();
    let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!((eth.dst_addr(), ip.src_addr, ip.dst_addr), (B_MAC, A6, far), "to the gateway's MAC");
    // Without a gateway (and no advertised router) there is no route: counted.
    let before = p.b.counters().drop_no_route;
    p.b.udp_send_to(sb, SocketAddrV6::new(far, 7, 0, 0), b"far").unwrap();
    let mut none = Capture::default();
    p.b.transmit(p.now, &mut none);
    assert!(none.frames.is_empty());
    assert_eq!(p.b.counters().drop_no_route, before + 1);
}

#[test]
fn packet_too_big_is_believed_only_for_a_bound_udp_socket() {
    let mut p = pair6();
    p.a.udp_bind(5000).unwrap();
    // A datagram A sent from port 5000, and one from a port nobody binds.
    let quote = |sport: u16| {
        let f = udp6_frame(7, &[1; 100], ChecksumMode::Verify);
        let mut q = f[ETHERNET_HEADER_LEN..].to_vec();
        // udp6_frame goes from A6 to B6: swap nothing, set the source port.
        q[IPV6_HEADER_LEN..IPV6_HEADER_LEN + 2].copy_from_slice(&sport.to_be_bytes());
        q
    };
    let now = p.now;
    let mut out = Capture::default();
    p.a.receive(now, &packet_too_big_frame(1300, &quote(5001)), RxMeta::default(), &mut out);
    assert_eq!((p.a.counters().drop_icmpv6_ptb_ignored, p.a.ipv6().unwrap().path_mtu(now, B6)), (1, 1500));
    p.a.receive(now, &packet_too_big_frame(1300, &quote(5000)), RxMeta::default(), &mut out);
    assert_eq!((p.a.counters().pmtu6_lowered, p.a.ipv6().unwrap().path_mtu(now, B6)), (1, 1300));
    assert_accounted(&p);
}
