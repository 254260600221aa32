//! Strategies shared by the integration tests.
#![allow(dead_code)]

use proptest::prelude::*;
use std::net::Ipv4Addr;
use ustack_wire::*;

pub mod ipv6_check;
pub mod v6;

pub fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

pub fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

pub fn ethernet(ethertype: EtherType) -> impl Strategy<Value = EthernetRepr> {
    (mac(), mac(), proptest::option::of(0u16..4096)).prop_map(move |(src_addr, dst_addr, vlan_id)| EthernetRepr {
        src_addr,
        dst_addr,
        ethertype,
        vlan_id,
    })
}

pub fn ipv4(protocol: IpProtocol, payload_len: usize) -> impl Strategy<Value = Ipv4Repr> {
    (ip(), ip(), any::<u8>(), any::<u16>(), any::<bool>(), any::<bool>(), 0u16..8192, any::<u8>()).prop_map(
        move |(src_addr, dst_addr, ttl, ident, dont_frag, more_frags, off, dscp_ecn)| Ipv4Repr {
            src_addr,
            dst_addr,
            protocol,
            payload_len,
            ttl,
            ident,
            dont_frag,
            more_frags,
            frag_offset: off * 8,
            dscp_ecn,
        },
    )
}

/// A TCP header description with owned payload (the repr borrows it).
#[derive(Clone, Debug)]
pub struct TcpCase {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: Option<u32>,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    pub ws: Option<u8>,
    pub sack_permitted: bool,
    pub sack: Vec<(u32, u32)>,
    pub ts: Option<(u32, u32)>,
    pub payload: Vec<u8>,
}

impl TcpCase {
    pub fn repr(&self) -> TcpRepr<'_> {
        let mut sack_ranges = [None; 4];
        for (slot, r) in sack_ranges.iter_mut().zip(&self.sack) {
            *slot = Some((TcpSeqNumber(r.0), TcpSeqNumber(r.1)));
        }
        let flags = TcpFlags::from_byte(self.flags).without(TcpFlags::ACK);
        let flags = if self.ack.is_some() { flags | TcpFlags::ACK } else { flags };
        TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq_number: TcpSeqNumber(self.seq),
            ack_number: self.ack.map(TcpSeqNumber),
            flags,
            window_len: self.window,
            max_seg_size: self.mss,
            window_scale: self.ws,
            sack_permitted: self.sack_permitted,
            sack_ranges,
            timestamp: self.ts,
            payload: &self.payload,
        }
    }

    /// How many SACK blocks fit after the other options, computed independently
    /// from the crate: 40 bytes of option space, aligned layout.
    pub fn sack_blocks_that_fit(&self) -> usize {
        let base = 4 * usize::from(self.mss.is_some())
            + 4 * usize::from(self.ws.is_some())
            + if self.ts.is_some() {
                12
            } else if self.sack_permitted {
                4
            } else {
                0
            };
        let fit = 40usize.saturating_sub(base + 4) / 8;
        self.sack.len().min(fit)
    }
}

pub fn tcp_case(max_ws: u8) -> impl Strategy<Value = TcpCase> {
    (
        (any::<u16>(), any::<u16>(), any::<u32>(), proptest::option::of(any::<u32>()), any::<u8>(), any::<u16>()),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0..=max_ws),
            any::<bool>(),
            proptest::collection::vec(any::<(u32, u32)>(), 0..=4),
            proptest::option::of(any::<(u32, u32)>()),
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |((src_port, dst_port, seq, ack, flags, window), (mss, ws, sack_permitted, sack, ts), payload)| TcpCase {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                window,
                mss,
                ws,
                sack_permitted,
                sack,
                ts,
                payload,
            },
        )
}
