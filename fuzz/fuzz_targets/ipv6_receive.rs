//! The core's IPv6 receive path (`ustack_core::ipv6::Ipv6Layer`): packets
//! in, time advancing, packets sent; every frame the layer emits must parse,
//! every packet must have exactly one outcome counted, and every table must
//! stay within its bound.
//!
//! Input is a sequence of records `[op, a, len_lo, len_hi, bytes…]`. The
//! low two bits of `op` choose what the bytes are: a raw IPv6 packet; the
//! payload of a well-formed IPv6 header we build (next header from `a`,
//! source and destination from small sets of ours, the peer's, groups and
//! strangers) with the ICMPv6 checksum completed so neighbour discovery, MLD
//! and echo are reached; fragments of such a packet (cut at `a`); or a
//! send from the layer. The high bits advance virtual time.
#![no_main]

#[path = "../models/checker.rs"]
mod checker;

use checker::Checker;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv6Addr;
use ustack_core::counters::Counters;
use ustack_core::ipv6::{Ipv6Config, Ipv6Input, Ipv6Layer};
use ustack_core::{Duration, Instant};
use ustack_wire::{EthernetAddress, Icmpv6Packet, IpProtocol, Ipv6FragmentRepr, Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};

const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);

fn addr(pick: u8) -> Ipv6Addr {
    const SET: [&str; 8] =
        ["2001:db8::2", "fe80::2", "fe80::1", "2001:db8::1", "ff02::1", "ff02::1:ff00:2", "::", "2001:db8:9::9"];
    SET[usize::from(pick) % SET.len()].parse().unwrap()
}

fn packet(src: Ipv6Addr, dst: Ipv6Addr, next: IpProtocol, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: next,
        payload_len: payload.len(),
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut b = vec![0u8; IPV6_HEADER_LEN + payload.len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    b[IPV6_HEADER_LEN..].copy_from_slice(payload);
    if next == IpProtocol::Icmpv6 && payload.len() >= 8 {
        Icmpv6Packet::new_unchecked(&mut b[IPV6_HEADER_LEN..]).fill_checksum(src, dst);
    }
    b
}

fn check_bounds(l: &Ipv6Layer, c: &Counters) {
    let cfg = l.config();
    assert!(l.neighbors().len() <= cfg.neighbor_cache_size);
    assert!(l.neighbors().incomplete_len() <= cfg.neighbor_max_incomplete);
    assert!(l.neighbors().pending_len() <= cfg.neighbor_pending_total);
    assert!(l.reassembly_held().0 <= cfg.reassembly_max_datagrams);
    assert!(l.reassembly_held().1 <= cfg.reassembly_memory);
    assert!(l.addresses().count() <= cfg.max_addresses);
    assert!(l.default_routers().count() <= cfg.max_routers);
    assert!(l.prefixes().count() <= cfg.max_prefixes);
    assert!(l.path_mtu_entries() <= cfg.pmtu_cache_size);
    assert_eq!(c.unaccounted_frames(), 0, "a packet without exactly one outcome: {c:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = Ipv6Config::new(OUR_MAC);
    cfg.addresses = vec!["2001:db8::2/64".parse().unwrap()];
    cfg.autoconf = true;
    cfg.dad_transmits = u8::from(data.first().is_some_and(|b| b & 1 == 1));
    cfg.neighbor_cache_size = 16;
    cfg.neighbor_max_incomplete = 4;
    cfg.neighbor_pending_total = 8;
    cfg.reassembly_max_datagrams = 4;
    cfg.reassembly_memory = 16 * 1024;
    cfg.max_addresses = 6;
    cfg.max_routers = 3;
    cfg.max_prefixes = 4;
    cfg.pmtu_cache_size = 4;
    let mut now = Instant::ZERO;
    let mut l = Ipv6Layer::new(cfg, 7, now);
    let mut c = Counters::default();
    let mut tx = Checker::new(true);
    let mut rest = data;
    while rest.len() >= 4 {
        let (op, a) = (rest[0], rest[1]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let (bytes, tail) = rest[4..].split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(op >> 2) * u64::from(op >> 2) * 8);
        let src = addr(a >> 3);
        let dst = addr(a.rotate_left(2));
        let mut packets = Vec::new();
        match op & 3 {
            0 => packets.push(bytes.to_vec()),
            1 => {
                let next = IpProtocol::from(bytes.first().copied().unwrap_or(58));
                let hop = if a & 1 == 0 { 255 } else { 1 };
                packets.push(packet(src, dst, next, hop, bytes.get(1..).unwrap_or(&[])));
            }
            2 => {
                let whole = packet(src, dst, IpProtocol::Icmpv6, 64, bytes);
                let per = (usize::from(a % 32) + 1) * 8;
                let ident = u32::from(a >> 5);
                for (i, chunk) in whole[IPV6_HEADER_LEN..].chunks(per).enumerate() {
                    let frag = Ipv6FragmentRepr {
                        next_header: IpProtocol::Icmpv6,
                        frag_offset: (i * per) as u16,
                        more_frags: (i + 1) * per < whole.len() - IPV6_HEADER_LEN,
                        ident,
                    };
                    let mut p = vec![0u8; 8];
                    frag.emit(&mut p);
                    p.extend_from_slice(chunk);
                    packets.push(packet(src, dst, IpProtocol::Ipv6Frag, 64, &p));
                }
                if a & 4 != 0 {
                    packets.reverse();
                }
            }
            _ => {
                let n = bytes.len().min(9000);
                if let Some(from) = l.select_source(dst) {
                    let _ = l.send(now, &mut c, &mut tx, from, dst, IpProtocol::Udp, n, |b| b.fill(a));
                }
            }
        }
        for p in &packets {
            c.rx_frames += 1;
            let out = l.receive(now, &mut c, p, a & 2 != 0, &mut tx);
            if let Ipv6Input::Deliver(d) = out {
                c.rx_consumed += 1;
                if d.reassembled {
                    let buf = l.take_reassembled();
                    assert!(d.payload.end <= buf.len() && d.payload.start <= d.payload.end);
                    l.restore_reassembled(buf);
                } else {
                    assert!(d.payload.end <= p.len() && d.payload.start <= d.payload.end);
                }
            }
            check_bounds(&l, &c);
        }
        if let Some(t) = l.poll_timeout() {
            if t <= now {
                l.handle_timeout(now, &mut c, &mut tx);
                assert!(l.poll_timeout().is_none_or(|t| t > now), "handle_timeout leaves nothing due");
            }
        }
        check_bounds(&l, &c);
    }
});
