//! One stack: an interface and the sockets on it.
//!
//! Call order, for an event loop (see `ustack-runtime`):
//! 1. [`Stack::poll`] with the device — receive a burst, answer what needs
//!    answering, fire due timers, send what sockets queued, flush.
//! 2. Application work through the socket methods (`udp_*`, `ping_*`).
//! 3. Sleep until [`Stack::poll_timeout`] or until the device is readable.
//!
//! [`Stack::receive`], [`Stack::handle_timeout`] and [`Stack::transmit`] are
//! the pieces `poll` is made of, for callers that drive a device themselves.

use crate::config::StackConfig;
use crate::counters::Counters;
use crate::icmp::{IcmpInput, PingSockets};
use crate::ip::{upper_layer, Iface, Input, Ipv4Delivery};
use crate::ipv6::{Ipv6Config, Ipv6Delivery, Ipv6Input, Ipv6Layer};
use crate::neighbor::NeighborCache;
use crate::phy::{Device, RxMeta, RxQueue, TxQueue};
use crate::rand::Rng;
use crate::tcp_sockets::TcpSockets;
use crate::time::Instant;
use crate::udp::UdpSockets;
use std::net::IpAddr;
use ustack_wire::{ChecksumMode, Icmpv6Packet, Icmpv6Repr, IpProtocol};

/// Frames `poll` takes from the device before it turns to timers and
/// transmission, so a flood cannot starve the rest.
pub const DEFAULT_RX_BURST: usize = 64;

/// The whole protocol engine for one interface: its address and neighbour
/// cache, IPv4 (with reassembly), ICMP, and the UDP, ping and TCP sockets.
///
/// Sans-IO: it makes no system call; the caller hands it the time and a
/// [`Device`] on every call (see the module's call order). One stack runs on
/// one thread; run several (one per core) for more.
///
/// The stack is the top of the layering: the IP layer (the `ip` module) hands
/// it what arrives, it gives each datagram to its protocol table, and the
/// tables send through the IP layer they are handed; none calls back up.
pub struct Stack {
    pub(crate) iface: Iface,
    pub(crate) udp: UdpSockets,
    pub(crate) ping: PingSockets,
    pub(crate) tcp: TcpSockets,
    pub(crate) rng: Rng,
    /// The shard this stack is, when it is one of several ([`Stack::set_shard`]).
    pub(crate) shard: Option<crate::rss::ShardHome>,
}

impl Stack {
    /// A stack for `cfg`. `seed` must come from a good random source in
    /// production (the runtime reads the OS RNG); tests pass a constant to be
    /// repeatable.
    pub fn new(cfg: StackConfig, seed: u64) -> Stack {
        let mut rng = Rng::new(seed);
        let hash_key = rng.next_u64();
        let tcp_secret = rng.key();
        let tcp = TcpSockets::new(cfg.tcp, cfg.tcp_syn_cookies, cfg.tcp_max_connections, tcp_secret, hash_key ^ 0xaaaa);
        let ip_ident = rng.next_u32() as u16;
        Stack {
            iface: Iface::new(cfg, hash_key, ip_ident),
            udp: UdpSockets::new(hash_key ^ 0x5555),
            ping: PingSockets::default(),
            tcp,
            rng,
            shard: None,
        }
    }

    /// The configuration the stack was built with.
    pub fn config(&self) -> &StackConfig {
        &self.iface.cfg
    }

    /// The stack's counters: packets in and out per protocol, and every drop by
    /// its reason.
    pub fn counters(&self) -> &Counters {
        &self.iface.counters
    }

    /// The neighbour (ARP) cache, for inspection.
    pub fn neighbors(&self) -> &NeighborCache {
        &self.iface.neighbors
    }

    /// Receive up to `budget` frames, then fire timers, transmit and flush.
    /// Receive up to `budget` frames, then fire timers, transmit and flush.
    /// Returns the number of frames received.
    pub fn poll<D: Device>(&mut self, now: Instant, device: &mut D, budget: usize) -> usize {
        self.iface.set_caps(&device.caps());
        let (mut rx, mut tx) = device.queues();
        let mut n = 0;
        while n < budget {
            let Some((frame, meta)) = rx.recv(now) else { break };
            self.receive(now, frame, meta, &mut tx);
            n += 1;
        }
        self.handle_timeout(now, &mut tx);
        self.transmit(now, &mut tx);
        tx.flush();
        n
    }

    /// The earliest time the stack has timer work; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.iface.poll_timeout(), self.tcp.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fire every timer that is due at `now`. Harmless to call early or twice.
    pub fn handle_timeout<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        self.tcp.handle_timeouts(&mut self.iface, now, tx);
        self.tcp.trim_pool(now);
        self.iface.handle_timeout(now, tx);
    }

    /// Send what sockets have queued.
    pub fn transmit<T: TxQueue>(&mut self, now: Instant, tx: &mut T) {
        self.tcp.transmit(&mut self.iface, now, tx);
        self.udp.transmit(&mut self.iface, now, tx);
        self.ping.transmit(&mut self.iface, now, tx);
    }

    /// Handle one received frame; replies go straight to `tx`.
    pub fn receive<T: TxQueue>(&mut self, now: Instant, frame: &[u8], meta: RxMeta, tx: &mut T) {
        match self.iface.receive(now, frame, meta, tx) {
            Input::Done => {}
            Input::Ipv4(d) => self.deliver_ipv4(now, &d, tx),
            Input::Ipv6 { packet, link_multicast, meta } => {
                let Ipv6Input::Deliver(d) = self.iface.receive_ipv6(now, packet, link_multicast, tx) else { return };
                if d.reassembled {
                    let buffer = self.iface.take_reassembled_v6();
                    // The device's checksum verdict was about single frames.
                    self.deliver_ipv6(now, &d, &buffer, RxMeta::default(), tx);
                    self.iface.restore_reassembled_v6(buffer);
                } else {
                    self.deliver_ipv6(now, &d, packet, meta, tx);
                }
            }
            Input::Ipv4Reassembled { ip, len, header_len, broadcast } => {
                let buffer = self.iface.take_reassembled();
                let datagram = &buffer[..len];
                let l4 = &datagram[header_len..];
                // The device's checksum verdict was about single frames.
                let meta = RxMeta::default();
                self.deliver_ipv4(now, &Ipv4Delivery { ip, datagram, l4, broadcast, meta }, tx);
                self.iface.restore_reassembled(buffer);
            }
        }
    }

    /// Hand a whole datagram — as received, or reassembled — to its
    /// protocol.
    #[inline]
    fn deliver_ipv4<T: TxQueue>(&mut self, now: Instant, d: &Ipv4Delivery<'_>, tx: &mut T) {
        let iface = &mut self.iface;
        match d.ip.protocol {
            IpProtocol::Icmp => match iface.receive_icmp(now, d, tx) {
                IcmpInput::Done => {}
                IcmpInput::EchoReply { ident, seq_no, data } => {
                    self.ping.receive_reply(&mut iface.counters, d.ip.src_addr, ident, seq_no, data)
                }
                IcmpInput::FragNeeded { next_hop_mtu, header, data } => {
                    self.receive_frag_needed(now, next_hop_mtu, &header, data, tx)
                }
            },
            IpProtocol::Udp => self.udp.receive(iface, now, d, tx),
            // TCP is unicast only (RFC 9293 §3.9.1.1 leaves no room for broadcast).
            IpProtocol::Tcp if d.broadcast => iface.counters.drop_tcp_other += 1,
            IpProtocol::Tcp => {
                let (src, dst) = (d.ip.src_addr.into(), d.ip.dst_addr.into());
                self.tcp.receive(iface, now, src, dst, d.l4, d.meta, tx)
            }
            _ => iface.unknown_protocol(now, d, tx),
        }
    }

    /// Hand an IPv6 packet's upper-layer message to its protocol; `packet`
    /// is what `d` indexes (the packet as received, or the reassembled one).
    fn deliver_ipv6<T: TxQueue>(&mut self, now: Instant, d: &Ipv6Delivery, packet: &[u8], meta: RxMeta, tx: &mut T) {
        let iface = &mut self.iface;
        let (src, dst) = (IpAddr::V6(d.src), IpAddr::V6(d.dst));
        match d.protocol {
            // TCP is unicast only.
            IpProtocol::Tcp if d.multicast => iface.counters.drop_tcp_other += 1,
            IpProtocol::Tcp => self.tcp.receive(iface, now, src, dst, upper_layer(d, packet), meta, tx),
            IpProtocol::Udp => self.udp.receive_ipv6(iface, now, d, packet, meta, tx),
            IpProtocol::Icmpv6 => {
                let l4 = upper_layer(d, packet);
                let parsed = Icmpv6Packet::new_checked(l4)
                    .and_then(|p| Icmpv6Repr::parse(&p, d.src, d.dst, ChecksumMode::Ignore));
                match parsed {
                    Ok(Icmpv6Repr::PacketTooBig { mtu, header, data }) => {
                        self.receive_packet_too_big(now, mtu, &header, data, tx)
                    }
                    // Echo replies and other errors: no ICMPv6 sockets yet.
                    _ => iface.counters.drop_icmpv6_ignored += 1,
                }
            }
            _ => iface.counters.drop_ipv6_unknown_next_header += 1,
        }
    }

    /// Start IPv6 on the interface at `now` (the link-local address and the
    /// static ones in `cfg` begin duplicate address detection; router
    /// solicitation and MLD reports follow). The MAC is the stack's; the
    /// stable-identifier secret and the layer's randomness come from the
    /// stack's seed.
    pub fn enable_ipv6(&mut self, cfg: Ipv6Config, now: Instant) {
        let mut cfg = Ipv6Config { mac: self.iface.cfg.mac, mtu: self.iface.cfg.mtu, ..cfg };
        if cfg.secret == [0; 16] {
            cfg.secret = self.rng.key();
        }
        self.iface.flow_key = self.rng.key();
        self.iface.ipv6 = Some(Ipv6Layer::new(cfg, self.rng.next_u64(), now));
    }

    /// The IPv6 layer (addresses, neighbours, routers), once enabled.
    pub fn ipv6(&self) -> Option<&Ipv6Layer> {
        self.iface.ipv6()
    }

    /// Datagrams in reassembly now, and the bytes of fragment data they hold
    /// (at most [`StackConfig::ipv4_reassembly_memory`]).
    pub fn ipv4_reassembly_held(&self) -> (usize, usize) {
        (self.iface.ipv4_reassembly.datagrams(), self.iface.ipv4_reassembly.bytes_held())
    }
}
