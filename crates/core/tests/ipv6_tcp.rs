//! TCP over IPv6 between two whole stacks on the in-memory link: address
//! resolution by NDP, the handshake with IPv6's MSS, data both ways checked
//! byte for byte, one flow label per connection, and IPv4 beside it on the
//! same listener (dual stack).

mod common;

use common::*;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use ustack_core::tcp::State;
use ustack_core::TcpHandle;
use ustack_wire::{EthernetFrame, Ipv6Packet, Ipv6Repr, TcpPacket};

fn connect(p: &mut Pair, to: SocketAddr) -> (TcpHandle, TcpHandle) {
    let client = p.a.tcp_connect(p.now, to).expect("connect");
    for _ in 0..2000 {
        step(p);
        if let Some(server) = p.b.tcp_accept(to.port()) {
            for _ in 0..10 {
                step(p);
            }
            assert_eq!(p.a.tcp_state(client), Some(State::Established));
            return (client, server);
        }
    }
    panic!("no connection to {to}");
}

/// `total` bytes from `src` on one stack to `dst` on the other, each checked.
fn transfer(p: &mut Pair, a_to_b: bool, src: TcpHandle, dst: TcpHandle, total: u64) {
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = vec![0u8; 16384];
    for _ in 0..200_000 {
        if received == total {
            return;
        }
        let (s, r) = if a_to_b { (&mut p.a, &mut p.b) } else { (&mut p.b, &mut p.a) };
        while sent < total {
            let n = (total - sent).min(4096) as usize;
            let chunk: Vec<u8> = (0..n as u64).map(|i| byte_at(sent + i)).collect();
            match s.tcp_send(src, &chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => sent += k as u64,
            }
        }
        while let Ok(n) = r.tcp_recv(dst, &mut buf) {
            if n == 0 {
                break;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, byte_at(received + i as u64), "byte {} differs", received + i as u64);
            }
            received += n as u64;
        }
        step(p);
    }
    panic!("transfer stalled at {received} of {total}");
}

#[test]
fn tcp_over_ipv6_moves_data_both_ways() {
    let mut p = pair6();
    p.b.tcp_listen(8080, 16).unwrap();
    let (client, server) = connect(&mut p, SocketAddrV6::new(B6, 8080, 0, 0).into());
    let t = p.a.tcp_connection(client).unwrap().four_tuple();
    assert_eq!((t.local_addr, t.remote_addr), (A6.into(), B6.into()));
    transfer(&mut p, true, client, server, 300_000);
    transfer(&mut p, false, server, client, 300_000);
    assert!(!p.a.ipv6().unwrap().neighbors().is_empty(), "B resolved by NDP");
}

/// With the link's checksum offload and TSO on, IPv6 segments leave as
/// super-segments with partial checksums, as IPv4's do, and every byte
/// arrives in order both ways.
#[test]
fn tcp_over_ipv6_sends_super_segments_on_a_tso_link() {
    let link = ustack_device::LinkConfig { checksum_offload: true, tso: true, ..Default::default() };
    let mut p = pair6_on(link);
    p.b.tcp_listen(8080, 16).unwrap();
    let (client, server) = connect(&mut p, SocketAddrV6::new(B6, 8080, 0, 0).into());
    transfer(&mut p, true, client, server, 4 << 20);
    transfer(&mut p, false, server, client, 4 << 20);
    let (sa, sb) = (p.pa.stats(), p.pb.stats());
    assert!(sa.super_segments > 0 && sb.super_segments > 0, "no IPv6 super-segment crossed: {sa:?} {sb:?}");
    assert_eq!(sa.dropped_oversize + sb.dropped_oversize, 0);
    let (ca, cb) = (p.a.counters(), p.b.counters());
    assert!(ca.tx_bytes / ca.tx_frames > 1500, "{} bytes in {} frames", ca.tx_bytes, ca.tx_frames);
    // Only the other side's multicast (MLD reports, router solicitations) is dropped.
    let dropped = ca.total_drops() + cb.total_drops() - ca.drop_eth_other_host - cb.drop_eth_other_host;
    assert_eq!(dropped, 0, "{ca:?}\n{cb:?}");
}

#[test]
fn one_listener_takes_both_versions() {
    let mut p = pair6();
    p.b.tcp_listen(80, 16).unwrap();
    let (c6, s6) = connect(&mut p, SocketAddrV6::new(B6, 80, 0, 0).into());
    let (c4, s4) = connect(&mut p, SocketAddrV4::new(B_IP, 80).into());
    transfer(&mut p, true, c6, s6, 20_000);
    transfer(&mut p, true, c4, s4, 20_000);
    assert!(p.b.tcp_connection(s6).unwrap().four_tuple().remote_addr.is_ipv6());
    assert!(p.b.tcp_connection(s4).unwrap().four_tuple().remote_addr.is_ipv4());
}

#[test]
fn segments_carry_ipv6_mss_and_one_flow_label_per_connection() {
    let mut p = pair6();
    p.b.tcp_listen(80, 16).unwrap();
    let (c1, _) = connect(&mut p, SocketAddrV6::new(B6, 80, 0, 0).into());
    let (c2, _) = connect(&mut p, SocketAddrV6::new(B6, 80, 0, 0).into());
    // Capture what A sends for each connection.
    let mut labels = Vec::new();
    for c in [c1, c2] {
        p.a.tcp_send(c, b"hello").unwrap();
        let mut keep = Capture::default();
        p.a.transmit(p.now, &mut keep);
        let mut seen = Vec::new();
        for f in &keep.frames {
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            let ip = Ipv6Repr::parse(&Ipv6Packet::new_checked(eth.payload()).unwrap()).unwrap();
            let tcp = TcpPacket::new_checked(&eth.payload()[40..]).unwrap();
            assert!(tcp.verify_checksum(ip.src_addr, ip.dst_addr));
            seen.push(ip.flow_label);
        }
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|&l| l == seen[0] && l != 0 && l < 1 << 20), "{seen:?}");
        labels.push(seen[0]);
    }
    assert_ne!(labels[0], labels[1], "each connection has its own label");
    // The SYN of a new connection advertises 1500 - 60.
    let _c3 = p.a.tcp_connect(p.now, SocketAddrV6::new(B6, 80, 0, 0)).unwrap();
    let mut keep = Capture::default();
    p.a.transmit(p.now, &mut keep);
    let syn = keep.frames.iter().find_map(|f| {
        let eth = EthernetFrame::new_checked(&f[..]).ok()?;
        let tcp = TcpPacket::new_checked(&eth.payload()[40..]).ok()?;
        let repr = ustack_wire::TcpRepr::parse(&tcp, A6, B6, ustack_wire::ChecksumMode::Verify).ok()?;
        repr.flags.syn().then_some(repr.max_seg_size)
    });
    assert_eq!(syn, Some(Some(1440)));
}

#[test]
fn connect_without_ipv6_says_so() {
    let mut p = Pair::new();
    let e = p.a.tcp_connect(p.now, SocketAddrV6::new(B6, 80, 0, 0)).unwrap_err();
    assert_eq!(e, ustack_core::ConnectError::NoSourceAddress);
}

#[test]
fn packet_too_big_is_believed_only_for_a_segment_in_flight() {
    let mut p = pair6();
    p.b.tcp_listen(80, 16).unwrap();
    let (client, _server) = connect(&mut p, SocketAddrV6::new(B6, 80, 0, 0).into());
    // A segment A sent and B has not acknowledged (it never reaches B).
    p.a.tcp_send(client, &[7; 1000]).unwrap();
    let mut keep = Capture::default();
    p.a.transmit(p.now, &mut keep);
    let seg = keep.frames[0][14..].to_vec();
    let now = p.now;
    let give =
        |a: &mut ustack_core::Stack, f: Vec<u8>| a.receive(now, &f, ustack_core::phy::RxMeta::default(), &mut Discard);
    let mtu = |a: &ustack_core::Stack| a.ipv6().unwrap().path_mtu(now, B6);
    // Its sequence number moved outside SND.UNA..SND.NXT: not believed.
    let mut bad_seq = seg.clone();
    let seq = u32::from_be_bytes(bad_seq[44..48].try_into().unwrap()).wrapping_add(1 << 30);
    bad_seq[44..48].copy_from_slice(&seq.to_be_bytes());
    give(&mut p.a, packet_too_big_frame(1300, &bad_seq));
    // Another port: no such connection.
    let mut other = seg.clone();
    other[42..44].copy_from_slice(&81u16.to_be_bytes());
    give(&mut p.a, packet_too_big_frame(1300, &other));
    let c = p.a.counters();
    assert_eq!((c.drop_icmpv6_ptb_bad_seq, c.drop_icmpv6_ptb_ignored, c.pmtu6_lowered, mtu(&p.a)), (1, 1, 0, 1500));
    // The segment as sent: believed; then lower, but never under 1280.
    give(&mut p.a, packet_too_big_frame(1400, &seg));
    assert_eq!((p.a.counters().pmtu6_lowered, mtu(&p.a)), (1, 1400));
    give(&mut p.a, packet_too_big_frame(600, &seg));
    assert_eq!((p.a.counters().pmtu6_lowered, mtu(&p.a)), (2, 1280));
    assert_eq!(p.a.counters().icmpv6_ptb_rx, 4);
    assert_eq!(p.a.counters().unaccounted_frames(), 0, "{:?}", p.a.counters());
}
