//! IPv4 reassembly through the whole stack: hand-cut fragments of real
//! frames over the in-memory link are answered like whole datagrams; time
//! runs out with ICMP time exceeded (code 1) only when fragment zero came;
//! a fragment flood stays inside its memory bound and, once the table
//! exists, allocates nothing.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use common::*;
use counting_alloc::allocations_during;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::phy::{Device, RxMeta, TxMeta, TxQueue};
use ustack_core::{Duration, Instant, Stack};
use ustack_wire::{
    ChecksumMode, EthernetFrame, Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded, IpProtocol, Ipv4Packet,
    ETHERNET_HEADER_LEN,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Put frames on the link from A's port, as if A had sent them.
fn inject(p: &mut Pair, frames: &[Vec<u8>]) {
    let (_, tx) = p.pa.queues();
    for f in frames {
        tx.send(f.len(), TxMeta::default(), |b| b.copy_from_slice(f)).unwrap();
    }
    tx.flush();
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn fragmented_echo_request_is_answered_like_a_whole_one() {
    let mut p = Pair::new();
    let h = p.a.ping_open(9).unwrap();
    let mut buf = [0u8; 2048];
    // Warm-up: both sides learn each other.
    p.a.ping_send(h, B_IP, 0, b"warm").unwrap();
    p.settle(Duration::from_millis(1));
    p.a.ping_recv(h, &mut buf).expect("warm-up reply");
    let data = payload(1200, 1);
    let mut frags = fragment(&echo_request_frame(9, 1, &data), 552, 0x1234);
    assert_eq!(frags.len(), 3);
    frags.reverse();
    inject(&mut p, &frags);
    p.settle(Duration::from_millis(1));
    let reply = p.a.ping_recv(h, &mut buf).expect("the echo reply to the reassembled request");
    assert_eq!((reply.from, reply.seq_no, reply.len), (B_IP, 1, 1200));
    assert!(buf[..1200] == data[..], "echo data differs");
    let c = p.b.counters();
    assert_eq!((c.ipv4_frag_rx, c.ipv4_reassembled, c.icmp_echo_replies_sent), (3, 1, 2));
    assert_eq!(c.total_drops(), 0);
    assert_eq!(p.b.ipv4_reassembly_held(), (0, 0));
    assert_eq!(p.b.poll_timeout(), None);
}

#[test]
fn fragmented_udp_reaches_its_socket_and_a_closed_port_is_refused() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    let a_port = p.a.udp_local_port(sa).unwrap();
    let mut buf = vec![0u8; 8192];
    p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 7), b"warm").unwrap();
    p.settle(Duration::from_millis(1));
    p.b.udp_recv_from(sb, &mut buf).expect("warm-up datagram");

    let data = payload(5000, 2);
    let mut frags = fragment(&udp_frame(A_IP, B_IP, a_port, 7, &data), 1480, 77);
    assert_eq!(frags.len(), 4);
    frags.swap(0, 2);
    inject(&mut p, &frags);
    p.settle(Duration::from_millis(1));
    let (len, from) = p.b.udp_recv_from(sb, &mut buf).expect("the reassembled datagram");
    assert_eq!((len, from), (5000, SocketAddrV4::new(A_IP, a_port).into()));
    assert!(buf[..len] == data[..], "datagram differs");
    // The answer goes back the ordinary way.
    p.b.udp_send_to(sb, from, b"got it").unwrap();
    p.settle(Duration::from_millis(1));
    let (len, _) = p.a.udp_recv_from(sa, &mut buf).expect("B's answer");
    assert_eq!(&buf[..len], b"got it");

    // To a closed port: port unreachable, quoting the reassembled header.
    inject(&mut p, &fragment(&udp_frame(A_IP, B_IP, a_port, 9, &data), 1480, 78));
    p.settle(Duration::from_millis(1));
    let c = p.b.counters();
    assert_eq!((c.ipv4_frag_rx, c.ipv4_reassembled, c.udp_rx), (8, 2, 3));
    assert_eq!((c.drop_udp_no_socket, c.icmp_errors_sent), (1, 1));
    assert_eq!(c.total_drops(), 1);
    assert_eq!(p.b.ipv4_reassembly_held(), (0, 0));
}

/// Stack B alone, knowing A's MAC, with everything it sends captured.
fn lone_b(mut cfg: ustack_core::StackConfig) -> (Stack, Capture) {
    // A's address stays fresh: no ARP refresh among the frames looked at.
    cfg.neighbor_reachable_time = Duration::from_secs(3600);
    let mut b = Stack::new(cfg, 2);
    let mut cap = Capture::default();
    b.receive(Instant::ZERO, &arp_request_frame(), RxMeta::default(), &mut cap);
    assert_eq!(cap.frames.len(), 1, "ARP reply");
    cap.frames.clear();
    (b, cap)
}

#[test]
fn time_exceeded_when_fragment_zero_came_and_time_ran_out() {
    let (mut b, mut cap) = lone_b(config(B_MAC, B_IP));
    let t0 = Instant::from_secs(10);
    let frags = fragment(&udp_frame(A_IP, B_IP, 5000, 7, &payload(3000, 3)), 1480, 0x4242);
    b.receive(t0, &frags[0], RxMeta::default(), &mut cap);
    // A datagram whose fragment zero never came: no ICMP for it.
    let other = fragment(&udp_frame(A_IP, B_IP, 5000, 7, &payload(3000, 4)), 1480, 0x4343);
    b.receive(t0 + Duration::from_secs(1), &other[1], RxMeta::default(), &mut cap);
    assert_eq!(b.poll_timeout(), Some(t0 + TIMEOUT));
    assert_eq!(b.ipv4_reassembly_held().0, 2);
    b.handle_timeout(t0 + TIMEOUT - Duration::from_millis(1), &mut cap);
    assert!(cap.frames.is_empty());
    b.handle_timeout(t0 + TIMEOUT, &mut cap);
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(1) + TIMEOUT));

    let [frame] = &cap.frames[..] else { panic!("expected one frame, got {}", cap.frames.len()) };
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(eth.dst_addr(), A_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.protocol()), (B_IP, A_IP, IpProtocol::Icmp));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let Ok(Icmpv4Repr::TimeExceeded { reason, header, data }) = Icmpv4Repr::parse(&icmp, ChecksumMode::Verify) else {
        panic!("not a time exceeded message: {:?}", ip.payload())
    };
    assert_eq!(reason, Icmpv4TimeExceeded::FragReassembly);
    assert_eq!((header.ident, header.src_addr, header.more_frags, header.frag_offset), (0x4242, A_IP, true, 0));
    // The first 8 bytes of fragment zero's data: the UDP header.
    assert_eq!(data, &frags[0][34..42]);

    b.handle_timeout(t0 + Duration::from_secs(1) + TIMEOUT, &mut cap);
    assert_eq!(cap.frames.len(), 1, "nothing about the datagram without fragment zero");
    let c = b.counters();
    assert_eq!((c.drop_ipv4_reasm_timeout, c.icmp_errors_sent, c.ipv4_reassembled), (2, 1, 0));
    assert_eq!((b.ipv4_reassembly_held(), b.poll_timeout()), ((0, 0), None));
}

#[test]
fn time_exceeded_is_rate_limited_and_never_about_broadcasts() {
    let mut cfg = config(B_MAC, B_IP);
    cfg.icmp_error_burst = 1;
    cfg.icmp_error_rate = 1;
    let (mut b, mut cap) = lone_b(cfg);
    for ident in 1..=3 {
        let frags = fragment(&udp_frame(A_IP, B_IP, 5000, 7, &payload(3000, 5)), 1480, ident);
        b.receive(Instant::ZERO, &frags[0], RxMeta::default(), &mut cap);
    }
    let bcast = Ipv4Addr::new(10, 0, 0, 255);
    let frags = fragment(&udp_frame(A_IP, bcast, 5000, 7, &payload(3000, 6)), 1480, 9);
    b.receive(Instant::ZERO, &frags[0], RxMeta::default(), &mut cap);
    assert_eq!(b.ipv4_reassembly_held().0, 4);
    b.handle_timeout(Instant::ZERO + TIMEOUT, &mut cap);
    let c = b.counters();
    assert_eq!((c.drop_ipv4_reasm_timeout, c.icmp_errors_sent, c.icmp_errors_rate_limited), (4, 1, 2));
    assert_eq!(cap.frames.len(), 1);
}

/// xorshift64*, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn fragment_flood_stays_bounded_and_allocates_nothing() {
    let mut cfg = config(B_MAC, B_IP);
    cfg.ipv4_reassembly_max_datagrams = 8;
    cfg.ipv4_reassembly_memory = 16 * 1024;
    // Short, so that garbage also leaves by timing out (overlaps end most of it).
    cfg.ipv4_reassembly_timeout = Duration::from_secs(1);
    let memory = cfg.ipv4_reassembly_memory;
    let (mut b, mut cap) = lone_b(cfg);
    let sb = b.udp_bind(7).unwrap();
    let mut tx = Discard;
    let mut buf = vec![0u8; 65536];
    let data = payload(4000, 7);
    let whole = fragment(&udp_frame(A_IP, B_IP, 5000, 7, &data), 1480, 1);
    let mut now = Instant::ZERO;
    // Warm-up: the first fragment allocates the table, arena and assembly buffer.
    for f in &whole {
        b.receive(now, f, RxMeta::default(), &mut cap);
    }
    assert_eq!(b.udp_recv_from(sb, &mut buf).map(|(n, _)| n), Some(4000));

    // Fragments at random offsets and lengths, either flag, from three
    // sources with 64 identifications each: far more datagrams than the table
    // takes, reaching everywhere in the 64 KiB a datagram may span. The
    // sources are off-link with no gateway, so ICMP errors about them end
    // as `drop_no_route` instead of creating neighbour entries.
    let heads: Vec<Vec<u8>> = (1..=3).map(|i| udp_frame(Ipv4Addr::new(192, 0, 2, i), B_IP, 1, 2, &[])).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut frame = vec![0u8; 1514];
    let mut fragments = 3;
    let n = allocations_during(|| {
        for _ in 0..20_000 {
            let r = rng.next();
            let len = 8 * (1 + (r >> 8) as usize % 180);
            let offset = 8 * ((r >> 20) as usize % 8000);
            let head = &heads[(r % 3) as usize];
            frame[..head.len()].copy_from_slice(head);
            let total = 20 + len;
            let f = &mut frame[..ETHERNET_HEADER_LEN + total];
            let mut p = Ipv4Packet::new_unchecked(&mut f[ETHERNET_HEADER_LEN..]);
            p.set_total_len(total as u16);
            p.set_ident((r >> 40) as u16 % 64);
            p.set_frag(false, r & 1 == 0, offset as u16);
            p.fill_checksum();
            // Offset 0 without MF is a whole datagram, not a fragment.
            fragments += u64::from(r & 1 == 0 || offset != 0);
            b.receive(now, f, RxMeta::default(), &mut tx);
            let (datagrams, bytes) = b.ipv4_reassembly_held();
            assert!(datagrams <= 8 && bytes <= memory, "{datagrams} datagrams, {bytes} bytes held");
            now += Duration::from_millis(5);
            b.handle_timeout(now, &mut tx);
        }
    });
    assert_eq!(n, 0, "the stack allocated under a fragment flood");
    let c = b.counters();
    assert_eq!(c.ipv4_frag_rx, fragments);
    assert!(c.drop_ipv4_reasm_table_full > 0 && c.drop_ipv4_reasm_timeout > 0, "{c:?}");
    assert!(c.drop_ipv4_reasm_overlap > 0 && c.drop_ipv4_reasm_memory > 0, "{c:?}");
    // Once the flood has timed out, a real datagram gets through again.
    b.handle_timeout(now + TIMEOUT, &mut tx);
    assert_eq!((b.ipv4_reassembly_held(), b.poll_timeout()), ((0, 0), None));
    for f in whole.iter().rev() {
        b.receive(now + TIMEOUT, f, RxMeta::default(), &mut tx);
    }
    assert_eq!(b.udp_recv_from(sb, &mut buf).map(|(n, _)| n), Some(4000));
    assert!(buf[..4000] == data[..]);
}

/// IPv4 fragments (MF set or an offset) among captured frames, with the
/// data length of each.
fn sent_fragments(frames: &[Vec<u8>]) -> Vec<(u16, bool, usize)> {
    frames
        .iter()
        .filter_map(|f| {
            let ip = Ipv4Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).ok()?;
            (ip.more_frags() || ip.frag_offset() != 0).then(|| (ip.frag_offset(), ip.more_frags(), ip.payload().len()))
        })
        .collect()
}

#[test]
fn datagrams_over_the_mtu_leave_as_fragments_and_come_back_whole() {
    let mut p = Pair::new();
    let sa = p.a.udp_bind(0).unwrap();
    let sb = p.b.udp_bind(7).unwrap();
    let a_port = p.a.udp_local_port(sa).unwrap();
    let mut buf = vec![0u8; 65536];
    // 1,473 bytes is the first size that does not fit 1500; 65,507 the largest.
    for (i, len) in [1473, 4000, 8000, 65_507].into_iter().enumerate() {
        let data = payload(len, i as u8);
        p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 7), &data).unwrap();
        p.settle(Duration::from_millis(1));
        let (n, from) = p.b.udp_recv_from(sb, &mut buf).unwrap_or_else(|| panic!("{len} bytes did not arrive"));
        assert_eq!((n, from), (len, SocketAddrV4::new(A_IP, a_port).into()));
        assert!(buf[..n] == data[..], "{len}-byte datagram differs");
        p.b.udp_send_to(sb, from, &buf[..n]).unwrap();
        p.settle(Duration::from_millis(1));
        let (n, _) = p.a.udp_recv_from(sa, &mut buf).unwrap_or_else(|| panic!("{len}-byte echo did not arrive"));
        assert!(n == len && buf[..n] == data[..], "{len}-byte echo differs");
    }
    let frags = |len: usize| (len + 8).div_ceil(1480) as u64;
    let want: u64 = [1473, 4000, 8000, 65_507].into_iter().map(frags).sum();
    for c in [p.a.counters(), p.b.counters()] {
        assert_eq!((c.ipv4_fragmented, c.ipv4_frag_tx, c.ipv4_reassembled), (4, want, 4), "{c:?}");
        assert_eq!(c.total_drops(), 0, "{c:?}");
    }
    // The largest datagram is refused at the API, with the limit said.
    let err = p.a.udp_send_to(sa, SocketAddrV4::new(B_IP, 7), &buf[..65_508]).unwrap_err();
    assert_eq!(err, ustack_core::UdpSendError::TooBig { max: 65_507 });

    // ping -s 4000: the request leaves in fragments, B reassembles it and
    // answers in fragments too.
    let h = p.a.ping_open(3).unwrap();
    let data = payload(4000, 9);
    p.a.ping_send(h, B_IP, 1, &data).unwrap();
    p.settle(Duration::from_millis(1));
    let reply = p.a.ping_recv(h, &mut buf).expect("echo reply to a 4000-byte request");
    assert_eq!((reply.from, reply.seq_no, reply.len), (B_IP, 1, 4000));
    assert!(buf[..4000] == data[..]);
    assert_eq!(p.b.counters().icmp_echo_replies_sent, 1);
}

#[test]
fn fragments_are_cut_on_8_byte_boundaries_with_df_clear_and_allocate_nothing() {
    let (mut b, mut cap) = lone_b(config(B_MAC, B_IP));
    let sb = b.udp_bind(7).unwrap();
    let dst = SocketAddrV4::new(A_IP, 5000);
    let data = payload(4000, 1);
    b.udp_send_to(sb, dst, &data).unwrap();
    b.transmit(Instant::ZERO, &mut cap);
    // 4,008 UDP bytes in 1,480-byte pieces (a multiple of 8).
    assert_eq!(sent_fragments(&cap.frames), [(0, true, 1480), (1480, true, 1480), (2960, false, 1048)]);
    for f in &cap.frames {
        let ip = Ipv4Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).unwrap();
        assert!(!ip.dont_frag() && ip.verify_checksum() && ip.total_len() as usize <= 1500);
    }
    // After the first datagram (which allocates the scratch buffer), sending
    // large datagrams allocates nothing, however many fragments they make.
    let mut tx = Discard;
    let big = payload(65_507, 2);
    let n = allocations_during(|| {
        for _ in 0..20 {
            b.udp_send_to(sb, dst, &big).unwrap();
            b.transmit(Instant::ZERO, &mut tx);
        }
    });
    assert_eq!(n, 0, "fragmenting allocated");
    let c = b.counters();
    assert_eq!((c.ipv4_fragmented, c.ipv4_frag_tx), (21, 3 + 20 * 45), "{c:?}");
    assert_eq!(c.total_drops(), 0, "{c:?}");
}
