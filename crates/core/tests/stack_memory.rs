//! Two stacks over the in-memory link: ARP, ping, UDP, ICMP errors, and the
//! bounds that hold under floods.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::phy::RxMeta;
use ustack_core::{Duration, Instant, Stack};
use ustack_wire::EthernetAddress;

#[test]
fn arp_resolves_and_ping_round_trips() {
    let mut p = Pair::new();
    let h = p.a.ping_open(77).unwrap();
    p.a.ping_send(h, B_IP, 1, b"hello").unwrap();
    p.settle(Duration::from_millis(1));
    assert_eq!(p.a.neighbors().get(B_IP), Some(B_MAC));
    // B learned A from the request addressed to it (RFC 826).
    assert_eq!(p.b.neighbors().get(A_IP), Some(A_MAC));
    let mut buf = [0u8; 16];
    let reply = p.a.ping_recv(h, &mut buf).expect("echo reply");
    assert_eq!((reply.from, reply.seq_no, &buf[..reply.len]), (B_IP, 1, &b"hello"[..]));
    assert_eq!(p.a.counters().arp_requests_sent, 1);
    assert_eq!(p.b.counters().arp_replies_sent, 1);
    assert_eq!(p.b.counters().icmp_echo_replies_sent, 1);
    assert_eq!(p.a.counters().total_drops() + p.b.counters().total_drops(), 0);
}

/// Let A learn B's address (and B learn A's) with one ping.
fn resolve(p: &mut Pair) {
    let h = p.a.ping_open(4242).unwrap();
    p.a.ping_send(h, B_IP, 0, b"").unwrap();
    p.settle(Duration::from_millis(1));
    p.a.ping_close(h);
}

#[test]
fn udp_datagrams_cross_both_ways() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(9000).unwrap();
    let a_port = p.a.udp_local_port(sa).unwrap();
    assert!(a_port >= 49152, "ephemeral port from the dynamic range");
    resolve(&mut p);
    for i in 0..10u8 {
        p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 9000), &[i; 100]).unwrap();
    }
    p.settle(Duration::from_millis(1));
    let mut buf = [0u8; 200];
    for i in 0..10u8 {
        let (n, from) = p.b.udp_recv_from(sb, &mut buf).unwrap();
        assert_eq!((n, from), (100, SocketAddrV4::new(A_IP, a_port).into()));
        assert_eq!(&buf[..n], &[i; 100]);
        p.b.udp_send_to(sb, from, &buf[..n]).unwrap();
    }
    p.settle(Duration::from_millis(1));
    assert_eq!(p.a.udp_rx_queued(sa), 10);
}

#[test]
fn closed_udp_port_gets_port_unreachable() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 5555), b"anyone?").unwrap();
    p.settle(Duration::from_millis(1));
    assert_eq!(p.b.counters().drop_udp_no_socket, 1);
    assert_eq!(p.b.counters().icmp_errors_sent, 1);
    assert_eq!(p.a.counters().icmp_rx, 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    resolve(&mut p);
    // Far more than the burst, all at one instant.
    for _ in 0..200 {
        p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 5555), b"x").unwrap();
    }
    for _ in 0..5 {
        p.turn(); // 64 frames per turn at most
    }
    let c = p.b.counters();
    assert_eq!(c.drop_udp_no_socket, 200);
    assert_eq!(p.a.counters().drop_neighbor_pending_full, 0);
    assert_eq!(c.icmp_errors_sent, u64::from(p.b.config().icmp_error_burst));
    assert_eq!(c.icmp_errors_rate_limited, 200 - c.icmp_errors_sent);
}

#[test]
fn unanswered_arp_gives_up_and_counts_the_drops() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    let nobody = Ipv4Addr::new(10, 0, 0, 99);
    for _ in 0..5 {
        p.a.udp_send_to(sa, SocketAddrV4::new(nobody, 9), b"x").unwrap();
    }
    p.turn();
    let per_entry = p.a.config().neighbor_pending_per_entry as u64;
    assert_eq!(p.a.counters().neighbor_pending_queued, per_entry);
    assert_eq!(p.a.counters().drop_neighbor_pending_full, 5 - per_entry);
    // Retries come from the timer; the deadline is reported.
    for _ in 0..10 {
        let Some(t) = p.a.poll_timeout() else { break };
        p.now = t;
        p.turn();
    }
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.a.counters().arp_requests_sent, u64::from(p.a.config().arp_max_retries));
    assert_eq!(p.a.counters().drop_neighbor_unreachable, per_entry);
    assert_eq!(p.a.neighbors().len(), 0);
}

#[test]
fn stale_entries_are_refreshed() {
    let mut p = Pair::new();
    let h = p.a.ping_open(1).unwrap();
    p.a.ping_send(h, B_IP, 1, b"x").unwrap();
    p.settle(Duration::from_millis(1));
    assert_eq!(p.a.counters().arp_requests_sent, 1);
    p.now = p.now + p.a.config().neighbor_reachable_time + Duration::from_secs(1);
    p.a.ping_send(h, B_IP, 2, b"x").unwrap();
    p.settle(Duration::from_millis(1));
    // The stale address was still used, and a refresh went out and was answered.
    assert_eq!(p.a.counters().arp_requests_sent, 2);
    let mut buf = [0u8; 4];
    assert!(p.a.ping_recv(h, &mut buf).is_some());
    assert!(p.a.ping_recv(h, &mut buf).is_some());
}

fn udp_frame_to_b(src_ip: Ipv4Addr, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp_frame(src_ip, B_IP, 40000, dst_port, payload)
}

#[test]
fn flood_to_unresolved_neighbours_stays_bounded() {
    // Ask the stack to send to 1,000 neighbours nobody answers for, several
    // packets each: memory stays at its preallocated bound, drops are counted.
    let mut cfg = config(A_MAC, A_IP);
    cfg.ipv4 = ustack_core::Ipv4Cidr::new(A_IP, 16).unwrap();
    let mut a16 = Stack::new(cfg, 1);
    let mut tx = Discard;
    let s = a16.udp_bind(0).unwrap();
    let mut sent = 0u64;
    for round in 0..3 {
        for i in 0..1000u32 {
            let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 10, 0)) + i);
            if a16.udp_send_to(s, SocketAddrV4::new(dst, 9), &[round; 64]).is_ok() {
                sent += 1;
            }
            if i % 100 == 0 {
                a16.transmit(Instant::ZERO, &mut tx);
            }
        }
        a16.transmit(Instant::ZERO, &mut tx);
    }
    let c = a16.counters();
    let cfg = a16.config();
    assert_eq!(sent, 3000);
    assert!(a16.neighbors().incomplete_len() <= cfg.neighbor_max_incomplete);
    assert!(a16.neighbors().pending_len() <= cfg.neighbor_pending_total);
    assert_eq!(c.neighbor_pending_queued as usize, cfg.neighbor_pending_total);
    assert_eq!(
        c.neighbor_pending_queued + c.drop_neighbor_pending_full + c.drop_neighbor_incomplete_full,
        3000,
        "every datagram is either held or counted as dropped"
    );
    assert_eq!(c.arp_requests_sent as usize, cfg.neighbor_max_incomplete);
}

#[test]
fn flood_to_unread_udp_socket_stays_bounded() {
    let mut b = Stack::new(config(B_MAC, B_IP), 2);
    let s = b.udp_bind(7).unwrap();
    let mut tx = Discard;
    let frame = udp_frame_to_b(A_IP, 7, &[0x55; 1000]);
    for _ in 0..10_000 {
        b.receive(Instant::ZERO, &frame, RxMeta::default(), &mut tx);
    }
    let c = b.counters();
    let queued = b.udp_rx_queued(s) as u64;
    assert!(queued <= b.config().udp_rx_packets as u64);
    assert!(queued * 1000 <= b.config().udp_rx_bytes as u64);
    assert_eq!(queued + c.drop_udp_rx_queue_full, 10_000);
}

/// `frame` (Ethernet + IPv4 without options) with `options` (a multiple of
/// four bytes) inserted after the IPv4 header, lengths and checksum fixed.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x45 + (options.len() / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + options.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let hlen = 20 + options.len();
    let mut sum: u32 = f[14..14 + hlen].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f
}

#[test]
fn source_routed_datagrams_are_dropped() {
    // Like Linux's accept_source_route=0 (the conformance case
    // ip_source_route_echo checks the two agree on the wire).
    let mut b = Stack::new(config(B_MAC, B_IP), 2);
    let s = b.udp_bind(7).unwrap();
    let mut tx = Capture::default();
    let plain = udp_frame_to_b(A_IP, 7, b"x");
    let lsrr = [1, 131, 7, 4, 10, 0, 0, 2];
    let ssrr = [1, 137, 7, 4, 10, 0, 0, 2];
    let nops = [1, 1, 1, 1];
    for opts in [&lsrr[..], &ssrr[..]] {
        b.receive(Instant::ZERO, &with_ip_options(&plain, opts), RxMeta::default(), &mut tx);
    }
    assert_eq!(b.counters().drop_ipv4_source_route, 2);
    assert_eq!(b.udp_rx_queued(s), 0);
    b.receive(Instant::ZERO, &with_ip_options(&plain, &nops), RxMeta::default(), &mut tx);
    assert_eq!(b.udp_rx_queued(s), 1, "other options are skipped, the datagram delivered");
    assert_eq!(b.counters().unaccounted_frames(), 0);
}

#[test]
fn malformed_ip_options_get_a_parameter_problem() {
    // RFC 1122 3.2.2.5, as Linux answers (the conformance case
    // ip_bad_option_length checks the two agree on the wire).
    let mut b = Stack::new(config(B_MAC, B_IP), 2);
    let mut tx = Capture::default();
    b.receive(Instant::ZERO, &arp_request_frame(), RxMeta::default(), &mut tx); // B learns A
    tx.frames.clear();
    let bad = with_ip_options(&udp_frame_to_b(A_IP, 7, b"x"), &[1, 7, 1, 0]);
    b.receive(Instant::ZERO, &bad, RxMeta::default(), &mut tx);
    let c = b.counters();
    assert_eq!((c.drop_ipv4_malformed, c.icmp_errors_sent, c.unaccounted_frames()), (1, 1, 0));
    let [reply] = &tx.frames[..] else { panic!("one ICMP error, got {} frames", tx.frames.len()) };
    let icmp = &reply[34..];
    assert_eq!(&icmp[..2], &[12, 0], "parameter problem");
    assert_eq!(icmp[4], 21, "the pointer names the option (IP header offset 21)");
    assert_eq!(&icmp[8..8 + 24 + 8], &bad[14..14 + 24 + 8], "quotes the header and 8 bytes");
    // Not about a broadcast, nor with a bad header checksum.
    let mut to_bcast = udp_frame_to_b(A_IP, 7, b"x");
    to_bcast[30..34].copy_from_slice(&[255, 255, 255, 255]);
    let bcast = with_ip_options(&to_bcast, &[1, 7, 1, 0]);
    let mut bad_sum = bad.clone();
    bad_sum[24] ^= 0xff;
    for f in [bcast, bad_sum] {
        b.receive(Instant::ZERO, &f, RxMeta::default(), &mut tx);
    }
    assert_eq!((b.counters().drop_ipv4_malformed, b.counters().icmp_errors_sent), (3, 1));
}

#[test]
fn martians_and_other_hosts_are_dropped() {
    let mut b = Stack::new(config(B_MAC, B_IP), 2);
    let _s = b.udp_bind(7).unwrap();
    let mut tx = Capture::default();
    for src in [B_IP, Ipv4Addr::BROADCAST, Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::UNSPECIFIED] {
        b.receive(Instant::ZERO, &udp_frame_to_b(src, 7, b"x"), RxMeta::default(), &mut tx);
    }
    assert_eq!(b.counters().drop_ipv4_martian, 5);
    let mut f = udp_frame_to_b(A_IP, 7, b"x");
    f[0..6].copy_from_slice(&EthernetAddress([2, 9, 9, 9, 9, 9]).0);
    b.receive(Instant::ZERO, &f, RxMeta::default(), &mut tx);
    assert_eq!(b.counters().drop_eth_other_host, 1);
    assert!(tx.frames.is_empty(), "nothing answers a martian");
}
