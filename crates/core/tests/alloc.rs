//! The receive→reply path allocates nothing per packet: a counting global
//! allocator watches ICMP echo and UDP echo round trips between two stacks on
//! the in-memory link, after a warm-up that fills every pool and cache.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use common::*;
use counting_alloc::allocations_during;
use std::net::SocketAddrV4;
use ustack_core::Duration;

fn ping_round_trips(p: &mut Pair, h: ustack_core::PingHandle, n: u16) {
    let mut buf = [0u8; 64];
    for seq in 0..n {
        p.a.ping_send(h, B_IP, seq, &[7u8; 56]).unwrap();
        p.turn();
        p.turn();
        let r = p.a.ping_recv(h, &mut buf).expect("reply within two turns");
        assert_eq!(r.seq_no, seq);
    }
}

fn udp_round_trips(p: &mut Pair, sa: ustack_core::UdpHandle, sb: ustack_core::UdpHandle, n: u32) {
    let mut buf = [0u8; 2048];
    for i in 0..n {
        p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 7), &i.to_be_bytes()).unwrap();
        p.turn();
        let (len, from) = p.b.udp_recv_from(sb, &mut buf).expect("datagram at B");
        p.b.udp_send_to(sb, from, &buf[..len]).unwrap();
        p.turn(); // B sends
        p.turn(); // A receives
        let (len, _) = p.a.udp_recv_from(sa, &mut buf).expect("echo at A");
        assert_eq!(&buf[..len], &i.to_be_bytes());
    }
}

#[test]
fn echo_paths_allocate_nothing_per_packet() {
    let mut p = Pair::new();
    let h = p.a.ping_open(9).unwrap();
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    // Warm-up: resolve neighbours, fill the link's frame pools.
    p.a.ping_send(h, B_IP, 0, b"warm").unwrap();
    p.settle(Duration::from_millis(1));
    let mut buf = [0u8; 8];
    p.a.ping_recv(h, &mut buf).unwrap();
    ping_round_trips(&mut p, h, 100);
    udp_round_trips(&mut p, sa, sb, 100);

    let pings = allocations_during(|| ping_round_trips(&mut p, h, 10_000));
    assert_eq!(pings, 0, "ICMP echo round trips allocated");
    let udp = allocations_during(|| udp_round_trips(&mut p, sa, sb, 10_000));
    assert_eq!(udp, 0, "UDP echo round trips allocated");
    assert_eq!(p.a.counters().total_drops() + p.b.counters().total_drops(), 0);
}

#[test]
fn floods_allocate_nothing() {
    use std::net::Ipv4Addr;
    use ustack_core::phy::RxMeta;
    use ustack_core::{Instant, Ipv4Cidr, Stack};
    // Datagrams for 1,000 neighbours that never answer, and for a socket
    // nobody reads: once the stack exists, neither flood allocates.
    let mut cfg = config(A_MAC, A_IP);
    cfg.ipv4 = Ipv4Cidr::new(A_IP, 16).unwrap();
    let mut a = Stack::new(cfg, 1);
    let s = a.udp_bind(0).unwrap();
    let mut b = Stack::new(config(B_MAC, B_IP), 2);
    let _unread = b.udp_bind(7).unwrap();
    let frame = udp_frame(A_IP, B_IP, 1000, 7, &[0x55; 1000]);
    let mut tx = Discard;
    // Warm-up: let the neighbour table reach its size.
    for i in 0..1000u32 {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 10, 0)) + i);
        let _ = a.udp_send_to(s, SocketAddrV4::new(dst, 9), &[0; 64]);
        a.transmit(Instant::ZERO, &mut tx);
    }
    let n = allocations_during(|| {
        for round in 0..5u32 {
            for i in 0..1000u32 {
                let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 10, 0)) + i);
                let _ = a.udp_send_to(s, SocketAddrV4::new(dst, 9), &round.to_be_bytes());
                a.transmit(Instant::ZERO, &mut tx);
            }
        }
        for _ in 0..10_000 {
            b.receive(Instant::ZERO, &frame, RxMeta::default(), &mut tx);
        }
    });
    assert_eq!(n, 0, "floods allocated");
    assert!(a.counters().drop_neighbor_incomplete_full > 0);
    assert!(b.counters().drop_udp_rx_queue_full > 0);
}
