//! Hostile or odd input at the stack's edge, answered as Linux answers it
//! (each case was checked against a Linux 6.x kernel with scapy; see
//! docs/conformance-differences.md for where ustack departs on purpose).

mod common;

use common::*;
use std::net::Ipv4Addr;
use ustack_core::phy::RxMeta;
use ustack_core::{Duration, Instant, Stack};
use ustack_wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, Icmpv4Packet,
    Ipv4Packet, TcpPacket,
};

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const MAC_1: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x11]);
const MAC_2: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x22]);

fn stack() -> Stack {
    Stack::new(config(B_MAC, B_IP), 7)
}

fn arp_frame(op: ArpOperation, eth_dst: EthernetAddress, smac: EthernetAddress, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr {
        operation: op,
        source_hardware_addr: smac,
        source_protocol_addr: sip,
        target_hardware_addr: if op == ArpOperation::Reply { B_MAC } else { EthernetAddress([0; 6]) },
        target_protocol_addr: tip,
    };
    let e = EthernetRepr { src_addr: smac, dst_addr: eth_dst, ethertype: EtherType::Arp, vlan_id: None };
    let mut f = vec![0u8; 14 + repr.buffer_len()];
    e.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

fn feed(s: &mut Stack, now: Instant, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut cap = Capture::default();
    s.receive(now, frame, RxMeta::default(), &mut cap);
    cap.frames
}

fn at(secs: f64) -> Instant {
    Instant::ZERO + Duration::from_micros((secs * 1e6) as u64)
}

#[test]
fn arp_request_from_outside_the_subnet_is_answered_but_not_learned() {
    let mut s = stack();
    let outsider = Ipv4Addr::new(192, 168, 77, 5);
    let out = feed(&mut s, at(1.0), &arp_frame(ArpOperation::Request, EthernetAddress::BROADCAST, MAC_1, outsider, B_IP));
    assert_eq!(out.len(), 1, "the request for us is answered (as Linux does)");
    assert_eq!(s.neighbors().get(outsider), None);
    assert_eq!(s.neighbors().len(), 0);
    assert_eq!(s.counters().arp_sender_off_subnet, 1);
    // The same from inside the subnet is learned.
    feed(&mut s, at(1.0), &arp_frame(ArpOperation::Request, EthernetAddress::BROADCAST, MAC_1, A_IP, B_IP));
    assert_eq!(s.neighbors().get(A_IP), Some(MAC_1));
}

#[test]
fn a_changed_address_within_locktime_is_ignored() {
    let mut s = stack();
    feed(&mut s, at(1.0), &arp_frame(ArpOperation::Request, EthernetAddress::BROADCAST, MAC_1, GW, B_IP));
    assert_eq!(s.neighbors().get(GW), Some(MAC_1));
    // A unicast reply and a gratuitous ARP, each with another address, half a
    // second later: the first answer wins.
    feed(&mut s, at(1.5), &arp_frame(ArpOperation::Reply, B_MAC, MAC_2, GW, B_IP));
    feed(&mut s, at(1.6), &arp_frame(ArpOperation::Request, EthernetAddress::BROADCAST, MAC_2, GW, GW));
    assert_eq!(s.neighbors().get(GW), Some(MAC_1));
    assert_eq!(s.counters().arp_update_locked, 2);
    // After the locktime a unicast reply may move the address (a real move).
    feed(&mut s, at(2.5), &arp_frame(ArpOperation::Reply, B_MAC, MAC_2, GW, B_IP));
    assert_eq!(s.neighbors().get(GW), Some(MAC_2));
    assert_eq!(s.counters().arp_update_locked, 2);
}

#[test]
fn a_gratuitous_move_is_used_but_verified_at_once() {
    let mut s = stack();
    feed(&mut s, at(1.0), &arp_frame(ArpOperation::Reply, B_MAC, MAC_1, A_IP, B_IP));
    // A gratuitous ARP (broadcast, sender = target) after the locktime moves
    // the entry, but it does not assert reachability: the next packet to the
    // neighbour goes with a unicast request to check it (Linux: STALE).
    feed(&mut s, at(3.0), &arp_frame(ArpOperation::Request, EthernetAddress::BROADCAST, MAC_2, A_IP, A_IP));
    assert_eq!(s.neighbors().get(A_IP), Some(MAC_2));
    let sent_before = s.counters().arp_requests_sent;
    let mut cap = Capture::default();
    let h = s.udp_bind(5001).unwrap();
    s.udp_send_to(h, std::net::SocketAddrV4::new(A_IP, 9), b"x").unwrap();
    s.transmit(at(3.1), &mut cap);
    assert_eq!(s.counters().arp_requests_sent, sent_before + 1, "the moved entry is verified on use");
    // A reachable entry (a unicast reply) is used without asking.
    let mut s = stack();
    feed(&mut s, at(1.0), &arp_frame(ArpOperation::Reply, B_MAC, MAC_1, A_IP, B_IP));
    let h = s.udp_bind(5001).unwrap();
    s.udp_send_to(h, std::net::SocketAddrV4::new(A_IP, 9), b"x").unwrap();
    s.transmit(at(1.1), &mut cap);
    assert_eq!(s.counters().arp_requests_sent, 0);
}

#[test]
fn echo_request_with_a_nonzero_code_is_answered_with_that_code() {
    let mut s = stack();
    let mut req = echo_request_frame(7, 1, b"abc");
    // Set code 5 and patch the ICMP checksum.
    let icmp_at = 14 + 20;
    req[icmp_at + 1] = 5;
    Icmpv4Packet::new_unchecked(&mut req[icmp_at..]).fill_checksum();
    feed(&mut s, at(1.0), &arp_request_frame());
    let out = feed(&mut s, at(1.0), &req);
    assert_eq!(out.len(), 1, "answered, as Linux answers it");
    let icmp = Icmpv4Packet::new_checked(&out[0][icmp_at..]).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (0, 5));
    assert!(icmp.verify_checksum());
}

/// A SYN from A to B's port 80 whose options are `opts` (padded with NOPs).
fn syn_with_options(sport: u16, opts: &[u8]) -> Vec<u8> {
    let mut opts = opts.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(1);
    }
    let mut f = udp_frame(A_IP, B_IP, sport, 80, &[0u8; 12 + 40][..opts.len() + 12]);
    let l3 = 14;
    let l4 = l3 + 20;
    let tcp_len = 20 + opts.len();
    f.truncate(l4 + tcp_len);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_protocol(ustack_wire::IpProtocol::Tcp);
        ip.set_total_len((20 + tcp_len) as u16);
        ip.fill_checksum();
    }
    let t = &mut f[l4..];
    t[..20].fill(0);
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[20..].copy_from_slice(&opts);
    TcpPacket::new_unchecked(&mut f[l4..]).fill_checksum(A_IP, B_IP);
    f
}

#[test]
fn syns_with_malformed_option_lengths_are_answered() {
    // Linux's tcp_parse_options skips a known option of the wrong length and
    // stops at a length below 2 or past the end; the SYN is answered.
    let cases: [&[u8]; 5] = [
        &[2, 3, 5],          // MSS, length 3
        &[2, 0, 5, 0xb4],    // MSS, length 0
        &[3, 4, 7, 0],       // window scale, length 4
        &[3, 1, 7],          // window scale, length 1
        &[2, 9, 5, 0xb4],    // MSS, length past the end
    ];
    let mut s = stack();
    s.tcp_listen(80, 16).unwrap();
    feed(&mut s, at(1.0), &arp_request_frame());
    for (i, opts) in cases.iter().enumerate() {
        let out = feed(&mut s, at(1.0), &syn_with_options(4000 + i as u16, opts));
        let mut cap = Capture::default();
        s.transmit(at(1.0), &mut cap);
        let all: Vec<_> = out.into_iter().chain(cap.frames).collect();
        assert_eq!(all.len(), 1, "case {i} {opts:?}: one SYN-ACK");
        let t = TcpPacket::new_checked(&all[0][34..]).unwrap();
        assert!(t.flags().syn() && t.flags().ack(), "case {i}: SYN-ACK");
    }
    assert_eq!(s.counters().drop_tcp_malformed, 0);
}
