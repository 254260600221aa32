//! Two stacks on the in-memory link, turned in virtual time.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use ustack_core::ipv6::Ipv6Config;
use ustack_core::phy::{TxFull, TxMeta, TxQueue};
use ustack_core::tcp::{BufferSizes, State};
use ustack_core::{Duration, Instant, Ipv4Cidr, Stack, StackConfig, TcpHandle};
use ustack_device::{LinkConfig, MemoryLink, MemoryPort};
use ustack_wire::{EthernetAddress, Ipv6Cidr};

pub const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const A_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
pub const B_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);

pub fn config(mac: EthernetAddress, ip: Ipv4Addr) -> StackConfig {
    StackConfig::new(mac, Ipv4Cidr::new(ip, 24).unwrap())
}

pub struct Pair {
    pub a: Stack,
    pub pa: MemoryPort,
    pub b: Stack,
    pub pb: MemoryPort,
    pub now: Instant,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_link(LinkConfig::default())
    }

    pub fn with_link(link: LinkConfig) -> Pair {
        let (pa, pb) = MemoryLink::pair(link, 42);
        Pair {
            a: Stack::new(config(A_MAC, A_IP), 1),
            pa,
            b: Stack::new(config(B_MAC, B_IP), 2),
            pb,
            now: Instant::ZERO,
        }
    }

    /// Poll both stacks once at the current time.
    pub fn turn(&mut self) {
        self.a.poll(self.now, &mut self.pa, 64);
        self.b.poll(self.now, &mut self.pb, 64);
    }

    /// Turn until nothing is in flight, advancing time by `step` each turn.
    pub fn settle(&mut self, step: Duration) {
        for _ in 0..1000 {
            self.turn();
            if self.pa.in_flight() == 0 && self.pb.in_flight() == 0 {
                return;
            }
            self.now += step;
        }
        panic!("link did not settle");
    }
}

/// A transmit queue that keeps every frame, for looking at what a stack sent.
#[derive(Default)]
pub struct Capture {
    pub frames: Vec<Vec<u8>>,
}

impl TxQueue for Capture {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, _meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let mut f = vec![0; len];
        fill(&mut f);
        self.frames.push(f);
        Ok(())
    }
}

/// A transmit queue that throws frames away.
pub struct Discard;

impl TxQueue for Discard {
    fn send<F: FnOnce(&mut [u8])>(&mut self, len: usize, _meta: TxMeta, fill: F) -> Result<(), TxFull> {
        let mut buf = [0u8; 2048];
        fill(&mut buf[..len.min(2048)]);
        Ok(())
    }
}

fn eth(src: EthernetAddress, dst: EthernetAddress) -> ustack_wire::EthernetRepr {
    ustack_wire::EthernetRepr { src_addr: src, dst_addr: dst, ethertype: ustack_wire::EtherType::Ipv4, vlan_id: None }
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr) -> ustack_wire::Ipv4Repr {
    ustack_wire::Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: ustack_wire::IpProtocol::Udp,
        payload_len: 0,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        dscp_ecn: 0,
    }
}

/// An Ethernet+IPv4+UDP frame from A's MAC to B's MAC.
pub fn udp_frame(src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let e = eth(A_MAC, B_MAC);
    let mut f = vec![0u8; ustack_wire::build::udp_frame_len(&e, payload.len())];
    let udp = ustack_wire::UdpRepr { src_port, dst_port };
    ustack_wire::build::udp_frame(&mut f, &e, &ip(src_ip, dst_ip), &udp, payload).unwrap();
    f
}

/// An echo request from A to B.
pub fn echo_request_frame(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let e = eth(A_MAC, B_MAC);
    let icmp = ustack_wire::Icmpv4Repr::EchoRequest { ident, seq_no, data };
    let mut f = vec![0u8; ustack_wire::build::icmpv4_frame_len(&e, &icmp)];
    ustack_wire::build::icmpv4_frame(&mut f, &e, &ip(A_IP, B_IP), &icmp).unwrap();
    f
}

/// A broadcast ARP request from A asking for B.
pub fn arp_request_frame() -> Vec<u8> {
    let repr = ustack_wire::ArpRepr {
        operation: ustack_wire::ArpOperation::Request,
        source_hardware_addr: A_MAC,
        source_protocol_addr: A_IP,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: B_IP,
    };
    let e =
        ustack_wire::EthernetRepr { ethertype: ustack_wire::EtherType::Arp, ..eth(A_MAC, EthernetAddress::BROADCAST) };
    let mut f = vec![0u8; 14 + repr.buffer_len()];
    e.emit(&mut ustack_wire::EthernetFrame::new_unchecked(&mut f[..]));
    repr.emit(&mut ustack_wire::ArpPacket::new_unchecked(&mut f[14..]));
    f
}

/// Cut the IPv4 datagram in an Ethernet frame into fragments carrying at
/// most `max` bytes of data each (a multiple of 8), as a router would: same
/// header, identification `ident`, DF clear.
pub fn fragment(frame: &[u8], max: usize, ident: u16) -> Vec<Vec<u8>> {
    assert_eq!(max % 8, 0);
    let ip = ustack_wire::Ipv4Packet::new_checked(&frame[ustack_wire::ETHERNET_HEADER_LEN..]).unwrap();
    let head = ustack_wire::ETHERNET_HEADER_LEN + ip.header_len();
    let data = ip.payload();
    (0..data.len())
        .step_by(max)
        .map(|offset| {
            let n = max.min(data.len() - offset);
            let mut f = frame[..head].to_vec();
            f.extend_from_slice(&data[offset..offset + n]);
            let mut p = ustack_wire::Ipv4Packet::new_unchecked(&mut f[ustack_wire::ETHERNET_HEADER_LEN..]);
            p.set_total_len((head - ustack_wire::ETHERNET_HEADER_LEN + n) as u16);
            p.set_ident(ident);
            p.set_frag(false, offset + n < data.len(), offset as u16);
            p.fill_checksum();
            f
        })
        .collect()
}

/// The IPv6 addresses of A and B in the IPv6 tests.
pub const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Start IPv6 on `s` with the static address `addr`/64.
pub fn enable(s: &mut Stack, addr: Ipv6Addr) {
    enable_with(s, addr, |_| {});
}

/// [`enable`], with `tune` changing the rest of the configuration.
pub fn enable_with(s: &mut Stack, addr: Ipv6Addr, tune: impl FnOnce(&mut Ipv6Config)) {
    let mut cfg = Ipv6Config::new(s.config().mac);
    cfg.addresses.push(Ipv6Cidr { addr, prefix_len: 64 });
    tune(&mut cfg);
    s.enable_ipv6(cfg, Instant::ZERO);
}

/// A keyed pseudorandom byte at `offset`, so every byte can be checked on arrival.
pub fn byte_at(offset: u64) -> u8 {
    let mut z = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    (z.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 56) as u8
}

/// One turn, then time jumps to the next delivery or timer.
pub fn step(p: &mut Pair) {
    p.turn();
    let next = [p.pa.next_delivery(), p.pb.next_delivery(), p.a.poll_timeout(), p.b.poll_timeout()]
        .into_iter()
        .flatten()
        .min();
    if let Some(t) = next {
        if t > p.now {
            p.now = t;
        }
    }
}

/// Listen on b's `port` with `server`'s buffer sizes, connect from a with
/// `client`'s, and turn until both ends are established.
pub fn open_tcp(p: &mut Pair, port: u16, client: BufferSizes, server: BufferSizes) -> (TcpHandle, TcpHandle) {
    p.b.tcp_listen_with(port, 16, server).unwrap();
    let c = p.a.tcp_connect_with(p.now, std::net::SocketAddrV4::new(B_IP, port), client).unwrap();
    let s = accept_next(p, port);
    for _ in 0..10 {
        step(p);
    }
    assert_eq!(p.a.tcp_state(c), Some(State::Established));
    (c, s)
}

/// Turn until b's listener on `port` has a connection to accept.
pub fn accept_next(p: &mut Pair, port: u16) -> TcpHandle {
    for _ in 0..1000 {
        step(p);
        if let Some(s) = p.b.tcp_accept(port) {
            return s;
        }
    }
    panic!("no connection on port {port}");
}

/// Two stacks with IPv6, past duplicate address detection.
pub fn pair6() -> Pair {
    pair6_with(|_| {})
}

/// [`pair6`], with `tune_a` changing A's IPv6 configuration.
pub fn pair6_with(tune_a: impl FnOnce(&mut Ipv6Config)) -> Pair {
    settle6(Pair::new(), tune_a)
}

/// [`pair6`] over a link configured as `link`.
#[allow(dead_code)] // not every test binary that includes `common` uses it
pub fn pair6_on(link: LinkConfig) -> Pair {
    settle6(Pair::with_link(link), |_| {})
}

/// IPv6 on both stacks of `p`, past duplicate address detection.
fn settle6(mut p: Pair, tune_a: impl FnOnce(&mut Ipv6Config)) -> Pair {
    enable_with(&mut p.a, A6, tune_a);
    enable(&mut p.b, B6);
    let until = p.now + Duration::from_secs(3);
    let mut turns = 0;
    while p.now < until && turns < 10_000 {
        step(&mut p);
        turns += 1;
    }
    p
}

/// An ICMPv6 Packet Too Big from B to A (MACs and addresses) quoting
/// `quote` (an IPv6 packet from its header on).
pub fn packet_too_big_frame(mtu: u32, quote: &[u8]) -> Vec<u8> {
    use ustack_wire::*;
    let header = Ipv6Repr::parse(&Ipv6Packet::new_checked(quote).unwrap()).unwrap();
    let data = &quote[IPV6_HEADER_LEN..quote.len().min(IPV6_HEADER_LEN + 200)];
    let repr = Icmpv6Repr::PacketTooBig { mtu, header, data };
    let len = repr.buffer_len();
    let mut f = vec![0u8; ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + len];
    let eth = EthernetRepr { src_addr: B_MAC, dst_addr: A_MAC, ethertype: EtherType::Ipv6, vlan_id: None };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let ip = Ipv6Repr {
        src_addr: B6,
        dst_addr: A6,
        next_header: IpProtocol::Icmpv6,
        payload_len: len,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    let l3 = &mut f[ETHERNET_HEADER_LEN..];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut l3[..IPV6_HEADER_LEN]));
    repr.emit(&mut Icmpv6Packet::new_unchecked(&mut l3[IPV6_HEADER_LEN..]), B6, A6, ChecksumMode::Verify);
    f
}
