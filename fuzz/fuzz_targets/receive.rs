//! The core's whole receive path: frames in, time advancing, whatever comes
//! out. Every frame the stack emits must itself parse.
//!
//! Input is a sequence of records `[op, len_lo, len_hi, bytes…]`. The low bit
//! of `op` says whether the bytes are a raw frame or the L4 payload of a
//! well-formed Ethernet+IPv4 header we build (so the fuzzer reaches ICMP, UDP
//! and TCP quickly), or with bit 3 set an Ethernet+IPv6 one (the stack has
//! IPv6 enabled at 2001:db8::2/64; an ICMPv6 checksum is completed); the next
//! bits pick the IP protocol; the high bits advance virtual time.
#![no_main]

#[path = "../models/checker.rs"]
mod checker;

use checker::Checker;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr};
use ustack_core::ipv6::Ipv6Config;
use ustack_core::phy::RxMeta;
use ustack_core::{Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_wire::{
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, Icmpv6Packet, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Cidr, Ipv6Packet, Ipv6Repr,
};

const OURS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OURS6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

fuzz_target!(|data: &[u8]| {
    let mut cfg = StackConfig::new(OUR_MAC, Ipv4Cidr::new(OURS, 24).unwrap());
    cfg.gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
    let mut stack = Stack::new(cfg, 7);
    let mut v6 = Ipv6Config::new(OUR_MAC);
    v6.addresses = vec![Ipv6Cidr::new(OURS6, 64).unwrap()];
    v6.dad_transmits = 0;
    stack.enable_ipv6(v6, Instant::ZERO);
    let _udp = stack.udp_bind(7).unwrap();
    let _ping = stack.ping_open(1).unwrap();
    stack.tcp_listen(80, 16).unwrap();
    let mut accepted = Vec::new();
    let mut buf = [0u8; 512];
    let mut tx = Checker::new(false);
    let mut frame = vec![0u8; 2048];
    let mut now = Instant::ZERO;
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (bytes, tail) = rest[3..].split_at(len);
        rest = tail;
        now = now + ustack_core::Duration::from_millis(u64::from(op >> 3) * 37);
        let meta = RxMeta::default();
        if op & 1 == 0 {
            stack.receive(now, bytes, meta, &mut tx);
        } else {
            let protocol = match (op >> 1) & 3 {
                0 => IpProtocol::Icmp,
                1 => IpProtocol::Udp,
                2 => IpProtocol::Tcp,
                _ => IpProtocol::Unknown(253),
            };
            if op & 8 != 0 {
                let next = match protocol {
                    IpProtocol::Icmp => IpProtocol::Icmpv6,
                    p => p,
                };
                let ip = Ipv6Repr {
                    src_addr: PEER6,
                    dst_addr: OURS6,
                    next_header: next,
                    payload_len: bytes.len().min(1460),
                    hop_limit: 255,
                    traffic_class: 0,
                    flow_label: 0,
                };
                let eth =
                    EthernetRepr { src_addr: PEER_MAC, dst_addr: OUR_MAC, ethertype: EtherType::Ipv6, vlan_id: None };
                let total = 14 + 40 + ip.payload_len;
                let f = &mut frame[..total];
                eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
                ip.emit(&mut Ipv6Packet::new_unchecked(&mut f[14..54]));
                f[54..].copy_from_slice(&bytes[..ip.payload_len]);
                if next == IpProtocol::Icmpv6 && ip.payload_len >= 8 {
                    Icmpv6Packet::new_unchecked(&mut f[54..]).fill_checksum(PEER6, OURS6);
                }
                stack.receive(
                    now,
                    f,
                    RxMeta { csum_verified: true, csum_partial: false, ..RxMeta::default() },
                    &mut tx,
                );
                continue_app(&mut stack, &mut accepted, &mut buf, op);
                stack.handle_timeout(now, &mut tx);
                stack.transmit(now, &mut tx);
                let c = stack.counters();
                assert_eq!(c.unaccounted_frames(), 0, "a frame without exactly one outcome: {c:?}");
                continue;
            }
            let ip = Ipv4Repr {
                src_addr: PEER,
                dst_addr: OURS,
                protocol,
                payload_len: bytes.len().min(1480),
                ttl: 64,
                ident: 1,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                dscp_ecn: 0,
            };
            let eth = EthernetRepr { src_addr: PEER_MAC, dst_addr: OUR_MAC, ethertype: EtherType::Ipv4, vlan_id: None };
            let total = 14 + 20 + ip.payload_len;
            let f = &mut frame[..total];
            eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
            f[34..].copy_from_slice(&bytes[..ip.payload_len]);
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..]), ChecksumMode::Verify);
            // Trust the L4 checksum so the fuzzer explores what lies behind it.
            stack.receive(now, f, RxMeta { csum_verified: true, csum_partial: false, ..RxMeta::default() }, &mut tx);
        }
        continue_app(&mut stack, &mut accepted, &mut buf, op);
        stack.handle_timeout(now, &mut tx);
        stack.transmit(now, &mut tx);
        let c = stack.counters();
        assert_eq!(c.unaccounted_frames(), 0, "a frame without exactly one outcome: {c:?}");
    }
});

/// Play the application: accept, read, answer, and close now and then.
fn continue_app(stack: &mut Stack, accepted: &mut Vec<TcpHandle>, buf: &mut [u8], op: u8) {
    while let Some(h) = stack.tcp_accept(80) {
        accepted.push(h);
    }
    for (i, &h) in accepted.iter().enumerate() {
        while let Ok(n) = stack.tcp_recv(h, buf) {
            if n == 0 {
                break;
            }
            let _ = stack.tcp_send(h, &buf[..n]);
        }
        if (op as usize + i) % 7 == 0 {
            stack.tcp_close(h);
        }
    }
}
