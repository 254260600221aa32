//! Every received frame is accounted for: used (`rx_consumed`) or dropped
//! with a named reason, never lost silently (see `counters.rs`, Accounting).
//!
//! Two stacks on an impaired in-memory link (loss, duplication, reordering,
//! corruption) move TCP both ways while A's port also carries a hostile and
//! malformed mix to B: truncated frames, other hosts' MACs, unknown
//! EtherTypes and VLANs, malformed and bogus ARP, IPv4 with bad checksums,
//! martian sources, other destinations and unknown protocols, UDP to closed
//! ports, with bad checksums and beyond a socket's queue, unwanted echo
//! replies, TCP with bad checksums, to closed ports and RSTs to a listener,
//! duplicate, overlapping and never-completed fragments. After every poll,
//! for both stacks:
//!
//! ```text
//! rx_frames + ipv4_reassembled == rx_consumed + rx_drops()
//! ```
//!
//! and at the end every drop counter the mix aims at has moved, so each of
//! those paths was taken and counted.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::phy::{Device, TxMeta, TxQueue};
use ustack_core::{Duration, Stack};
use ustack_device::LinkConfig;
use ustack_wire::{Ipv4Packet, ETHERNET_HEADER_LEN};

fn check(s: &Stack, who: &str) {
    let c = s.counters();
    assert_eq!(
        c.unaccounted_frames(),
        0,
        "{who}: rx_frames {} + reassembled {} != consumed {} + drops {}: {c:?}",
        c.rx_frames,
        c.ipv4_reassembled,
        c.rx_consumed,
        c.rx_drops()
    );
}

fn step(p: &mut Pair) {
    p.turn();
    check(&p.a, "A");
    check(&p.b, "B");
    let next = [p.pa.next_delivery(), p.pb.next_delivery(), p.a.poll_timeout(), p.b.poll_timeout()]
        .into_iter()
        .flatten()
        .min();
    p.now = match next {
        Some(t) if t > p.now => t.min(p.now + Duration::from_millis(50)),
        _ => p.now + Duration::from_millis(1),
    };
}

/// Put a frame on the link from A's port, as if A had sent it.
fn inject(p: &mut Pair, f: &[u8]) {
    let (_, tx) = p.pa.queues();
    tx.send(f.len(), TxMeta::default(), |b| b.copy_from_slice(f)).unwrap();
    tx.flush();
}

fn refill_ip_checksum(f: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut f[ETHERNET_HEADER_LEN..]).fill_checksum();
}

/// The hostile and malformed mix, round `i`.
fn hostile_mix(i: u16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let udp = |dst_port: u16, payload: &[u8]| udp_frame(A_IP, B_IP, 5000 + i, dst_port, payload);
    out.push(udp(7, b"to the bound port"));
    if i == 0 {
        // More than the socket's queue holds before it is read.
        out.extend((0..1100).map(|_| udp(7, b"burst")));
    }
    out.push(udp(9, b"to a closed port"));
    out.push(udp(7, &[0u8; 10])[..20].to_vec()); // truncated inside IPv4
    out.push(vec![0u8; 10]); // shorter than an Ethernet header
    let mut f = udp(7, b"other host");
    f[..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    out.push(f);
    let mut f = udp(7, b"ipv6?");
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    out.push(f);
    let mut f = udp(7, b"bad ip checksum");
    f[ETHERNET_HEADER_LEN + 10] ^= 0xff;
    out.push(f);
    let mut f = udp(7, b"bad udp checksum");
    *f.last_mut().unwrap() ^= 0x55;
    out.push(f);
    out.push(udp_frame(Ipv4Addr::LOCALHOST, B_IP, 1, 7, b"martian"));
    out.push(udp_frame(A_IP, Ipv4Addr::new(10, 0, 0, 99), 1, 7, b"for someone else"));
    let mut f = udp(7, b"protocol 253");
    f[ETHERNET_HEADER_LEN + 9] = 253;
    refill_ip_checksum(&mut f);
    out.push(f);
    out.push(echo_request_frame(1, i, b"ping"));
    let mut f = echo_request_frame(1, i, b"unwanted echo reply");
    f[ETHERNET_HEADER_LEN + 20] = 0; // type 0, echo reply: checksum changes by 0x0800
    let c = u16::from_be_bytes([f[36], f[37]]);
    let (sum, carry) = c.overflowing_add(0x0800);
    f[36..38].copy_from_slice(&(sum + u16::from(carry)).to_be_bytes());
    out.push(f);
    out.push(arp_request_frame());
    let mut f = arp_request_frame();
    f.truncate(20);
    out.push(f); // malformed ARP
    let mut f = arp_request_frame();
    f[28..32].copy_from_slice(&B_IP.octets()); // sender claims our address
    out.push(f);
    // TCP: to a closed port (RST back), with a bad checksum, a RST to the
    // listener, a bare ACK to it (RST back).
    for (port, flags, spoil) in [(81u16, 0x02u8, false), (80, 0x02, true), (80, 0x04, false), (80, 0x10, false)] {
        let mut f = tcp_frame(6000 + i, port, flags);
        if spoil {
            *f.last_mut().unwrap() ^= 1;
        }
        out.push(f);
    }
    // Fragments: a whole datagram in two, its first part again (duplicate),
    // an overlapping part of another datagram, and a lone head that never
    // completes (it times out).
    let big = udp(7, &[i as u8; 64]);
    out.extend(fragment(&big, 40, 100 + i));
    out.push(fragment(&big, 40, 100 + i)[0].clone());
    let other = fragment(&udp(7, &[1u8; 64]), 40, 2000 + i);
    out.push(other[0].clone());
    out.push(shifted(&other[1], 8));
    out.push(fragment(&udp(7, &[2u8; 64]), 40, 4000 + i)[0].clone());
    out
}

/// A bare TCP segment from A to B with `flags` and a valid checksum.
fn tcp_frame(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let e = ustack_wire::EthernetRepr { src_addr: A_MAC, dst_addr: B_MAC, ethertype: ustack_wire::EtherType::Ipv4, vlan_id: None };
    let ip = ustack_wire::Ipv4Repr {
        src_addr: A_IP,
        dst_addr: B_IP,
        protocol: ustack_wire::IpProtocol::Tcp,
        payload_len: 0,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        dscp_ecn: 0,
    };
    let tcp = ustack_wire::TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq_number: ustack_wire::TcpSeqNumber(7),
        ack_number: (flags & 0x10 != 0).then_some(ustack_wire::TcpSeqNumber(99)),
        flags: ustack_wire::TcpFlags::from_byte(flags),
        window_len: 1000,
        max_seg_size: None,
        window_scale: None,
        sack_permitted: false,
        sack_ranges: [None; 4],
        timestamp: None,
        payload: &[],
    };
    let mut f = vec![0u8; ustack_wire::build::tcp_frame_len(&e, &tcp)];
    ustack_wire::build::tcp_frame(&mut f, &e, &ip, &tcp).unwrap();
    f
}

/// A fragment moved `by` bytes left, so it overlaps its neighbour with
/// different bytes.
fn shifted(frag: &[u8], by: u16) -> Vec<u8> {
    let mut f = frag.to_vec();
    let mut p = Ipv4Packet::new_unchecked(&mut f[ETHERNET_HEADER_LEN..]);
    let (more, offset) = (p.more_frags(), p.frag_offset());
    p.set_frag(false, more, offset - by);
    let last = f.len() - 1;
    f[last] ^= 0xff;
    refill_ip_checksum(&mut f);
    f
}

#[test]
fn every_received_frame_is_consumed_or_counted_as_a_drop() {
    let link = LinkConfig { loss: 0.02, duplicate: 0.02, reorder: 0.05, corrupt: 0.02, ..LinkConfig::default() };
    let mut p = Pair::with_link(link);
    p.b.tcp_listen(80, 4).unwrap();
    let udp = p.b.udp_bind(7).unwrap();
    let client = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    let mut server = None;
    let chunk = vec![0x5au8; 4096];
    let (mut sent, mut got_b, mut got_a) = (0usize, 0usize, 0usize);
    let mut buf = vec![0u8; 65536];
    for round in 0..3000u32 {
        if round % 20 == 0 && round < 2000 {
            for f in hostile_mix((round / 20) as u16) {
                inject(&mut p, &f);
            }
        }
        step(&mut p);
        if server.is_none() {
            server = p.b.tcp_accept(80);
        }
        let Some(srv) = server else { continue };
        if sent < 400_000 {
            sent += p.a.tcp_send(client, &chunk).unwrap_or(0);
            let _ = p.b.tcp_send(srv, &chunk[..1000]);
        }
        while let Ok(n) = p.b.tcp_recv(srv, &mut buf) {
            if n == 0 {
                break;
            }
            got_b += n;
        }
        while let Ok(n) = p.a.tcp_recv(client, &mut buf) {
            if n == 0 {
                break;
            }
            got_a += n;
        }
        // Read UDP only now and then, so the socket's queue overflows.
        if round % 50 == 0 {
            while p.b.udp_recv_from(udp, &mut buf).is_some() {}
        }
    }
    // Let the lone fragments time out.
    p.now += Duration::from_secs(60);
    step(&mut p);
    assert!(got_b > 100_000 && got_a > 10_000, "the TCP load barely moved: {got_b} {got_a}");
    let c = p.b.counters();
    eprintln!("B: {c:?}");
    assert!(c.rx_consumed > 0 && c.ipv4_reassembled > 0);
    for (name, value) in c.iter() {
        let aimed_at = [
            "drop_eth_truncated",
            "drop_eth_other_host",
            "drop_eth_unknown_type",
            "drop_arp_malformed",
            "drop_arp_bogus_sender",
            "drop_ipv4_malformed",
            "drop_ipv4_checksum",
            "drop_ipv4_martian",
            "drop_ipv4_other_host",
            "drop_ipv4_unknown_protocol",
            "drop_ipv4_frag_duplicate",
            "drop_ipv4_reasm_overlap",
            "drop_ipv4_reasm_timeout",
            "drop_udp_checksum",
            "drop_udp_no_socket",
            "drop_udp_rx_queue_full",
            "drop_icmp_echo_reply_unwanted",
            "drop_tcp_checksum",
            "drop_tcp_no_socket",
        ];
        if aimed_at.contains(&name) {
            assert!(value > 0, "{name} never moved: the mix missed its path");
        }
    }
    check(&p.a, "A");
    check(&p.b, "B");
}
