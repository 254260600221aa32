//! Path MTU discovery through whole stacks on the in-memory link: a
//! "fragmentation needed" that quotes a segment of a connection inside its
//! window lowers the MTU towards that peer (never below the floor) and the
//! transfer carries on in smaller segments; forged ones — for no connection,
//! with a sequence number outside SND.UNA..SND.NXT, or a flood of them —
//! change nothing and are counted; the cache stays bounded and its entries
//! expire.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_core::phy::{Device, TxMeta, TxQueue};
use ustack_core::tcp::SeqNumber;
use ustack_core::{Duration, TcpHandle};
use ustack_wire::{EtherType, EthernetRepr, Icmpv4DstUnreachable, Icmpv4Repr, IpProtocol, Ipv4Repr};

/// An ICMP "fragmentation needed" from B's address to A, as a router on the
/// path would send it, quoting a TCP segment `local_port → remote:remote_port`
/// with sequence number `seq`.
fn frag_needed(next_hop_mtu: u16, remote: Ipv4Addr, local_port: u16, remote_port: u16, seq: SeqNumber) -> Vec<u8> {
    let header = Ipv4Repr {
        src_addr: A_IP,
        dst_addr: remote,
        protocol: IpProtocol::Tcp,
        payload_len: 1480,
        ttl: 63,
        ident: 7,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        dscp_ecn: 0,
    };
    let mut quoted = [0u8; 8];
    quoted[0..2].copy_from_slice(&local_port.to_be_bytes());
    quoted[2..4].copy_from_slice(&remote_port.to_be_bytes());
    quoted[4..8].copy_from_slice(&seq.0.to_be_bytes());
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::FragRequired { next_hop_mtu },
        header,
        data: &quoted,
    };
    let e = EthernetRepr { src_addr: B_MAC, dst_addr: A_MAC, ethertype: EtherType::Ipv4, vlan_id: None };
    let ip = Ipv4Repr { src_addr: B_IP, dst_addr: A_IP, protocol: IpProtocol::Icmp, ..header };
    let mut f = vec![0u8; ustack_wire::build::icmpv4_frame_len(&e, &icmp)];
    ustack_wire::build::icmpv4_frame(&mut f, &e, &ip, &icmp).unwrap();
    f
}

/// Put `frame` on the link from B's port, towards A.
fn to_a(p: &mut Pair, frame: &[u8]) {
    let (_, tx) = p.pb.queues();
    tx.send(frame.len(), TxMeta::default(), |b| b.copy_from_slice(frame)).unwrap();
    tx.flush();
}

fn connected() -> (Pair, TcpHandle, TcpHandle) {
    let mut p = Pair::new();
    p.b.tcp_listen(80, 4).unwrap();
    let c = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 80)).unwrap();
    p.settle(Duration::from_millis(1));
    let s = p.b.tcp_accept(80).expect("accepted");
    (p, c, s)
}

/// Move `n` bytes from A to B, checking each, turning until B has them all.
fn stream(p: &mut Pair, c: TcpHandle, s: TcpHandle, n: usize, seed: u8) {
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 65536];
    for _ in 0..100_000 {
        if sent < n {
            sent += p.a.tcp_send(c, &data[sent..]).unwrap_or(0);
        }
        p.turn();
        while let Ok(k) = p.b.tcp_recv(s, &mut buf) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        if got.len() == n {
            assert!(got == data, "stream differs");
            return;
        }
        p.now += Duration::from_micros(100);
    }
    panic!("stream stalled at {} of {n}", got.len());
}

#[test]
fn only_believable_frag_needed_lowers_the_path_mtu_and_never_below_the_floor() {
    let (mut p, c, s) = connected();
    let local_port = p.a.tcp_connection(c).unwrap().four_tuple().local_port;
    // Data in flight: A has sent but B has not acknowledged.
    assert!(p.a.tcp_send(c, &vec![7u8; 200_000]).unwrap() > 0);
    p.a.poll(p.now, &mut p.pa, 64);
    let conn = p.a.tcp_connection(c).unwrap();
    let (una, max) = (conn.snd_una(), conn.snd_max());
    assert!(max.gt(una), "nothing in flight");

    // For no connection: another port, another peer.
    to_a(&mut p, &frag_needed(1280, B_IP, local_port.wrapping_add(1), 80, una));
    to_a(&mut p, &frag_needed(1280, Ipv4Addr::new(10, 0, 0, 9), local_port, 80, una));
    // Outside SND.UNA..SND.NXT, both sides.
    to_a(&mut p, &frag_needed(1280, B_IP, local_port, 80, una - 1));
    to_a(&mut p, &frag_needed(1280, B_IP, local_port, 80, max + 1));
    p.a.poll(p.now, &mut p.pa, 64);
    let ca = p.a.counters();
    assert_eq!(
        (ca.icmp_frag_needed_rx, ca.drop_icmp_pmtu_unmatched, ca.drop_icmp_pmtu_bad_seq, ca.pmtu_lowered),
        (4, 2, 2, 0),
        "{ca:?}"
    );
    assert_eq!((p.a.path_mtu(p.now, B_IP), p.a.path_mtu_entries()), (1500, 0));
    assert_eq!(p.a.tcp_connection(c).unwrap().mss(), 1448);

    // A believable one reporting 100 bytes: the floor (552) is used.
    to_a(&mut p, &frag_needed(100, B_IP, local_port, 80, una));
    p.a.poll(p.now, &mut p.pa, 64);
    let ca = p.a.counters();
    assert_eq!((ca.pmtu_lowered, ca.pmtu_floor_applied), (1, 1), "{ca:?}");
    assert_eq!((p.a.path_mtu(p.now, B_IP), p.a.path_mtu_entries()), (552, 1));
    assert_eq!(p.a.tcp_connection(c).unwrap().mss(), 552 - 40 - 12);
    // A larger MTU for the same path does not raise it.
    to_a(&mut p, &frag_needed(1280, B_IP, local_port, 80, una));
    p.a.poll(p.now, &mut p.pa, 64);
    assert_eq!((p.a.counters().drop_icmp_pmtu_not_lower, p.a.path_mtu(p.now, B_IP)), (1, 552));

    // The stream carries on, every byte intact, in 552-byte packets.
    let mut buf = vec![0u8; 200_000];
    let mut got = 0;
    for _ in 0..100_000 {
        p.turn();
        while let Ok(k) = p.b.tcp_recv(s, &mut buf) {
            got += k;
        }
        if got == 200_000 {
            break;
        }
        p.now += Duration::from_micros(100);
    }
    assert_eq!(got, 200_000);
    stream(&mut p, c, s, 300_000, 3);

    // After `pmtu_expiry` the link's MTU is tried again.
    p.now += Duration::from_secs(601);
    assert_eq!(p.a.path_mtu(p.now, B_IP), 1500);
}

#[test]
fn a_flood_of_forged_frag_needed_changes_nothing_and_grows_nothing() {
    let (mut p, c, s) = connected();
    let local_port = p.a.tcp_connection(c).unwrap().four_tuple().local_port;
    assert!(p.a.tcp_send(c, &vec![1u8; 100_000]).unwrap() > 0);
    p.a.poll(p.now, &mut p.pa, 64);
    let una = p.a.tcp_connection(c).unwrap().snd_una();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let n = 5000u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Random peers, ports and sequence numbers, tiny MTUs: blind guesses.
        let remote = Ipv4Addr::from(0x0a00_0000 | (x as u32 & 0xff_ffff));
        let port = if x & 1 == 0 { local_port } else { (x >> 8) as u16 };
        let seq = SeqNumber((x >> 16) as u32 | 0x8000_0000) + una.0 as usize;
        to_a(&mut p, &frag_needed((x >> 40) as u16 % 600, remote, port, 80, seq));
        p.a.poll(p.now, &mut p.pa, 64);
    }
    let ca = p.a.counters();
    assert_eq!(ca.icmp_frag_needed_rx, n);
    assert_eq!(ca.pmtu_lowered, 0, "{ca:?}");
    assert_eq!(ca.drop_icmp_pmtu_unmatched + ca.drop_icmp_pmtu_bad_seq, n, "{ca:?}");
    assert_eq!((p.a.path_mtu_entries(), p.a.path_mtu(p.now, B_IP)), (0, 1500));
    assert_eq!(p.a.tcp_connection(c).unwrap().mss(), 1448);
    let mut buf = vec![0u8; 100_000];
    let mut got = 0;
    for _ in 0..100_000 {
        p.turn();
        while let Ok(k) = p.b.tcp_recv(s, &mut buf) {
            got += k;
        }
        if got == 100_000 {
            break;
        }
        p.now += Duration::from_micros(100);
    }
    assert_eq!(got, 100_000, "the stream stalled after the flood");
}
