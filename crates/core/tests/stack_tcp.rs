//! TCP through whole stacks on the in-memory link: handshake, transfers in
//! both directions (clean and lossy), close, RST for closed ports.

mod common;

use common::*;
use std::net::SocketAddrV4;
use ustack_core::tcp::BufferSizes;
use ustack_core::{Duration, Stack, TcpHandle};
use ustack_device::LinkConfig;

fn connect(p: &mut Pair, port: u16) -> (TcpHandle, TcpHandle) {
    open_tcp(p, port, BufferSizes::default(), BufferSizes::default())
}

/// Send `total` bytes from `from` to `to` over the pair, checking each byte.
fn transfer(p: &mut Pair, a_to_b: bool, src: TcpHandle, dst: TcpHandle, total: u64) {
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut buf = vec![0u8; 16384];
    let mut chunk = vec![0u8; 16384];
    let mut steps = 0u64;
    while received < total {
        let (s, r) = if a_to_b { (&mut p.a, &mut p.b) } else { (&mut p.b, &mut p.a) };
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = byte_at(sent + i as u64);
            }
            match s.tcp_send(src, &chunk[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => sent += k as u64,
            }
        }
        loop {
            match r.tcp_recv(dst, &mut buf) {
                Ok(0) => panic!("early end of stream at {received}"),
                Ok(n) => {
                    for (i, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, byte_at(received + i as u64), "byte {} corrupted", received + i as u64);
                    }
                    received += n as u64;
                }
                Err(_) => break,
            }
        }
        step(p);
        steps += 1;
        assert!(steps < 5_000_000, "transfer stalled at {received} of {total}");
    }
}

fn close_both(p: &mut Pair, client: TcpHandle, server: TcpHandle) {
    p.a.tcp_shutdown(client).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..10_000 {
        step(p);
        if p.b.tcp_recv(server, &mut buf) == Ok(0) {
            break;
        }
    }
    assert_eq!(p.b.tcp_recv(server, &mut buf), Ok(0), "server sees end of stream");
    p.b.tcp_close(server);
    for _ in 0..10_000 {
        step(p);
        if p.a.tcp_recv(client, &mut buf) == Ok(0) {
            break;
        }
    }
    assert_eq!(p.a.tcp_recv(client, &mut buf), Ok(0), "client sees end of stream");
    p.a.tcp_close(client);
    // TIME-WAIT and the last ACKs drain; both tables empty out.
    for _ in 0..100_000 {
        if p.a.tcp_connections() == 0 && p.b.tcp_connections() == 0 {
            break;
        }
        step(p);
    }
    assert_eq!((p.a.tcp_connections(), p.b.tcp_connections()), (0, 0));
}

#[test]
fn handshake_transfer_both_ways_and_close() {
    let mut p = Pair::new();
    let (c, s) = connect(&mut p, 80);
    transfer(&mut p, true, c, s, 4 << 20);
    transfer(&mut p, false, s, c, 4 << 20);
    close_both(&mut p, c, s);
    assert_eq!(p.a.counters().drop_tcp_checksum + p.b.counters().drop_tcp_checksum, 0);
}

/// The link's offloads on (checksum, TSO and coalesced receive, like two
/// VMs on virtio) at 0, 1 and 5% loss with duplication, reordering and
/// corruption: every byte arrives once and in order both ways (`transfer`
/// checks each), super-segments did cross, and corruption was caught.
#[test]
fn tso_link_delivers_every_byte_at_0_1_5_percent_loss() {
    for loss in [0.0, 0.01, 0.05] {
        let faults = loss > 0.0;
        let link = LinkConfig {
            checksum_offload: true,
            tso: true,
            loss,
            duplicate: if faults { 0.01 } else { 0.0 },
            reorder: if faults { 0.02 } else { 0.0 },
            corrupt: if faults { 0.01 } else { 0.0 },
            delay: Duration::from_millis(1),
            ..LinkConfig::default()
        };
        let mut p = Pair::with_link(link);
        let (c, s) = connect(&mut p, 80);
        transfer(&mut p, true, c, s, 4 << 20);
        transfer(&mut p, false, s, c, 4 << 20);
        close_both(&mut p, c, s);
        let (sa, sb) = (p.pa.stats(), p.pb.stats());
        assert!(sa.super_segments > 0 && sb.super_segments > 0, "loss {loss}: no super-segment crossed: {sa:?} {sb:?}");
        assert_eq!(sa.dropped_oversize + sb.dropped_oversize, 0, "loss {loss}");
        let (ca, cb) = (p.a.counters(), p.b.counters());
        // The senders wrote far fewer frames than 1,448-byte segments would need.
        assert!(ca.tx_bytes / ca.tx_frames > 1500, "loss {loss}: {} bytes in {} frames", ca.tx_bytes, ca.tx_frames);
        let caught = ca.drop_tcp_checksum + cb.drop_tcp_checksum + ca.drop_ipv4_checksum + cb.drop_ipv4_checksum;
        if faults {
            assert!(caught > 0, "loss {loss}: corruption was injected and must be caught by checksums");
        } else {
            assert_eq!(ca.total_drops() + cb.total_drops(), 0, "{ca:?}\n{cb:?}");
        }
    }
}

/// A sender whose send buffer holds under three segments (2 and 4 KiB),
/// with the link's TSO and coalesced receive on and off: each buffer-full
/// leaves as one super-segment or two segments plus a short tail, and the
/// receiver must ACK it at once, as Linux does ("more than one full frame"),
/// not after its 40 ms delayed-ACK timer. 256 KiB then take well under one
/// timer per buffer-full of virtual time (with TSO they took 40 ms each when
/// a coalesced 2 × 1,448 bytes counted as one segment of `rcv_mss` 1,460).
/// The application writes and reads whenever it can before time moves on,
/// as an event loop's would after each poll.
#[test]
fn small_send_buffers_are_acked_without_the_delayed_ack_timer() {
    for tso in [true, false] {
        for buffer in [2048usize, 4096] {
            let link = LinkConfig { checksum_offload: tso, tso, delay: Duration::from_millis(1), ..LinkConfig::default() };
            let mut p = Pair::with_link(link);
            let mut cfg = config(A_MAC, A_IP);
            cfg.tcp.send_buffer_size = buffer;
            p.a = Stack::new(cfg, 1);
            let (c, s) = connect(&mut p, 80);
            let total = 256 * 1024u64;
            let start = p.now;
            let (mut sent, mut received) = (0u64, 0u64);
            let mut buf = vec![0u8; 16384];
            let mut turns = 0u64;
            while received < total {
                let mut moved = false;
                while sent < total {
                    let n = (total - sent).min(buf.len() as u64) as usize;
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = byte_at(sent + i as u64);
                    }
                    match p.a.tcp_send(c, &buf[..n]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => (sent, moved) = (sent + k as u64, true),
                    }
                }
                while let Ok(n @ 1..) = p.b.tcp_recv(s, &mut buf) {
                    for (i, &b) in buf[..n].iter().enumerate() {
                        assert_eq!(b, byte_at(received + i as u64), "byte {} corrupted", received + i as u64);
                    }
                    (received, moved) = (received + n as u64, true);
                }
                if moved {
                    p.turn(); // the writes and the freed window leave now
                } else {
                    step(&mut p);
                }
                turns += 1;
                assert!(turns < 1_000_000, "tso {tso}, {buffer}-byte buffer: stalled at {received} of {total}");
            }
            let elapsed = p.now - start;
            let timers = Duration::from_millis(40) * (total / buffer as u64) as u32;
            assert!(
                elapsed < timers / 4,
                "tso {tso}, {buffer}-byte send buffer: {total} bytes took {elapsed:?} of virtual time \
                 (one delayed-ACK timer per buffer-full would be {timers:?})"
            );
        }
    }
}

#[test]
fn lossy_link_delivers_every_byte() {
    for (loss, offload, seed_note) in [(0.01, false, "1%"), (0.05, false, "5%"), (0.02, true, "2% with checksum offload")] {
        let link = LinkConfig {
            checksum_offload: offload,
            loss,
            duplicate: 0.01,
            reorder: 0.02,
            corrupt: 0.01,
            delay: Duration::from_millis(1),
            ..LinkConfig::default()
        };
        let mut p = Pair::with_link(link);
        let (c, s) = connect(&mut p, 80);
        transfer(&mut p, true, c, s, 2 << 20);
        transfer(&mut p, false, s, c, 2 << 20);
        close_both(&mut p, c, s);
        let corrupt_caught = p.a.counters().drop_tcp_checksum
            + p.b.counters().drop_tcp_checksum
            + p.a.counters().drop_ipv4_checksum
            + p.b.counters().drop_ipv4_checksum;
        assert!(corrupt_caught > 0, "{seed_note}: corruption was injected and must be caught by checksums");
    }
}

#[test]
fn closed_port_answers_rst_and_connect_is_refused() {
    let mut p = Pair::new();
    let c = p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, 81)).unwrap();
    for _ in 0..100 {
        step(&mut p);
    }
    assert_eq!(p.b.counters().drop_tcp_no_socket, 1);
    assert_eq!(p.b.counters().tcp_rst_sent, 1);
    let mut buf = [0u8; 4];
    assert!(p.a.tcp_recv(c, &mut buf).is_err());
}

#[test]
fn buffer_pool_gives_memory_back_after_a_load() {
    let mut p = Pair::new();
    // Several connections at once, each with a full send buffer in flight,
    // take the pool well above its 1 MiB floor.
    let pairs: Vec<_> = (0..16).map(|i| connect(&mut p, 8000 + i)).collect();
    let chunk = vec![0x5a; 256 * 1024];
    for &(client, _) in &pairs {
        let mut queued = 0;
        while let Ok(n) = p.a.tcp_send(client, &chunk[queued..]) {
            if n == 0 {
                break;
            }
            queued += n;
        }
    }
    let floor = p.a.config().tcp.buffer_pool_floor;
    let peak = p.a.tcp_buffer_pool().allocated_bytes();
    assert!(peak > 2 * floor, "the load should exceed the floor: {peak} B");
    // Drain everything, then let the stacks idle: within a few trim
    // periods the storage goes back to the floor, a bounded batch per poll.
    let mut buf = vec![0u8; 65536];
    for _ in 0..20_000 {
        for &(_, server) in &pairs {
            while let Ok(n) = p.b.tcp_recv(server, &mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
        step(&mut p);
        if p.a.tcp_buffer_pool().in_use() == 0 {
            break;
        }
    }
    assert_eq!(p.a.tcp_buffer_pool().in_use(), 0);
    let start = p.now;
    while p.now < start + Duration::from_secs(5) {
        p.now += Duration::from_millis(100);
        p.turn();
    }
    let after = p.a.tcp_buffer_pool().allocated_bytes();
    assert!(after <= floor, "pool storage {after} B after the load (peak {peak} B, floor {floor} B)");
    assert!(p.a.poll_timeout().is_none_or(|t| t > p.now), "nothing left to trim at once");
    // A new load takes chunks again (their storage is allocated anew).
    let (client, _) = pairs[0];
    let before = p.a.tcp_buffer_pool().allocated_bytes();
    assert_eq!(p.a.tcp_send(client, &chunk), Ok(chunk.len()));
    assert!(p.a.tcp_buffer_pool().allocated_bytes() >= before.max(chunk.len()));
}

/// A RST for a connection that is already gone lands on the listener: no
/// connection is there to attack, so it is counted as a segment for no
/// socket, never as an RFC 5961 refusal ("peer misbehaved"). Linux sends
/// such second RSTs routinely (one per segment of ours that reaches its
/// closed socket), and `wrk` runs counted them as `drop_tcp_rfc5961`.
#[test]
fn rst_for_a_gone_connection_at_a_listener_counts_as_no_socket() {
    let mut p = Pair::new();
    p.b.tcp_listen(80, 4).unwrap();
    let e = ustack_wire::EthernetRepr {
        src_addr: A_MAC,
        dst_addr: B_MAC,
        ethertype: ustack_wire::EtherType::Ipv4,
        vlan_id: None,
    };
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
        src_port: 40000,
        dst_port: 80,
        seq_number: ustack_wire::TcpSeqNumber(12345),
        ack_number: None,
        flags: ustack_wire::TcpFlags::from_byte(0x04),
        window_len: 0,
        max_seg_size: None,
        window_scale: None,
        sack_permitted: false,
        sack_ranges: [None; 4],
        timestamp: None,
        payload: &[],
    };
    let mut f = vec![0u8; ustack_wire::build::tcp_frame_len(&e, &tcp)];
    ustack_wire::build::tcp_frame(&mut f, &e, &ip, &tcp).unwrap();
    let mut cap = Capture::default();
    p.b.receive(p.now, &f, ustack_core::phy::RxMeta::default(), &mut cap);
    assert!(cap.frames.is_empty(), "a RST is never answered");
    let c = p.b.counters();
    assert_eq!((c.drop_tcp_no_socket, c.drop_tcp_rfc5961), (1, 0), "{c:?}");
}

/// Every connection between two hosts stamps from one timestamp clock
/// (offset keyed by the address pair, as Linux's `secure_tcp_ts_off`), so
/// a later connection's SYN always carries a later TSval than an earlier
/// one: a peer holding the earlier 4-tuple in TIME-WAIT takes the new SYN
/// (RFC 6191) instead of refusing it by PAWS, as a fresh random offset per
/// connection made it do about half the time.
#[test]
fn connections_between_two_hosts_share_one_timestamp_clock() {
    let mut p = Pair::new();
    connect(&mut p, 80); // resolves the neighbours
    let syn_tsval = |p: &mut Pair, port: u16| {
        p.a.tcp_connect(p.now, SocketAddrV4::new(B_IP, port)).unwrap();
        let mut cap = Capture::default();
        p.a.transmit(p.now, &mut cap);
        let f = cap.frames.last().expect("a SYN");
        let ip = ustack_wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        let tcp = ustack_wire::TcpPacket::new_checked(ip.payload()).unwrap();
        let repr = ustack_wire::TcpRepr::parse(&tcp, A_IP, B_IP, ustack_wire::ChecksumMode::Ignore).unwrap();
        assert!(repr.flags.syn());
        repr.timestamp.expect("timestamps are on by default").0
    };
    let first = syn_tsval(&mut p, 81);
    p.now += Duration::from_millis(1234);
    let second = syn_tsval(&mut p, 82);
    assert_eq!(second.wrapping_sub(first), 1234, "one clock for both connections");
}
