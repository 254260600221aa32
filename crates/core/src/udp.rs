//! UDP sockets over IPv4 and IPv6: bind, send_to, recv_from, with bounded
//! queues both ways.
//!
//! A socket bound with [`Stack::udp_bind`] (or to `[::]:port` with
//! [`Stack::udp_bind_addr`]) is dual-stack: it takes datagrams to any of
//! our addresses, IPv4 and IPv6. Bound to `0.0.0.0:port` it takes IPv4 only;
//! bound to one address, only datagrams to that address. One socket per port.
//!
//! Over IPv6 the checksum is mandatory (RFC 8200 §8.1): a datagram with a
//! zero checksum is dropped (`drop_udp6_zero_checksum`). A datagram larger
//! than the path MTU leaves as fragments, over either version; one larger
//! than an IP datagram can carry is refused at `udp_send_to`.
//!
//! Arriving datagrams are demultiplexed by destination port in a hash table
//! (O(1) per datagram). A socket that queues a datagram to send goes on a
//! transmit list once, so `transmit` visits only sockets with work; a
//! registered socket that becomes ready goes on a ready list, so
//! `poll_events` visits only sockets with news.

use crate::hash::{KeyedMap, KeyedState};
use crate::icmp::Unreachable;
use crate::ip::{upper_layer, Iface, Ipv4Delivery};
use crate::ipv6::Ipv6Delivery;
use crate::phy::RxMeta;
use crate::phy::TxQueue;
use crate::queue::PacketQueue;
use crate::readiness::{drain_ready, queue_readiness, Event, Interest, Readiness, Socket, Watch};
use crate::stack::Stack;
use crate::tcp::FourTuple;
use crate::time::Instant;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use ustack_wire::checksum::PseudoHeader;
use ustack_wire::{
    ChecksumMode, Icmpv6DstUnreachable, IpProtocol, UdpPacket, UdpRepr, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};

/// The largest IPv4 datagram (total length is a 16-bit field).
pub(crate) const MAX_IPV4_DATAGRAM: usize = u16::MAX as usize;

/// The largest UDP payload over IPv4: 65,507 bytes.
pub const MAX_UDP4_PAYLOAD: usize = MAX_IPV4_DATAGRAM - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// The largest UDP payload over IPv6 (no jumbograms): the payload length
/// field's 65,535 less the UDP header, 65,527 bytes.
pub const MAX_UDP6_PAYLOAD: usize = u16::MAX as usize - UDP_HEADER_LEN;

/// RFC 6056's suggested ephemeral range (also IANA's dynamic ports).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;

/// A bound UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpHandle(u32);

/// Why a bind failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Another socket holds the port.
    AddrInUse(u16),
    /// Every ephemeral port is taken.
    NoFreePort,
    /// The address is not one of the stack's (or IPv6 is not enabled).
    AddrNotAvailable(IpAddr),
}

/// Why a send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpSendError {
    /// The handle is not open.
    NotBound,
    /// The send queue is full; try after the next poll.
    WouldBlock,
    /// Larger than an IP datagram can carry; at most `max` bytes fit
    /// (65,507 over IPv4, 65,527 over IPv6). Datagrams larger than the
    /// path MTU leave as fragments.
    TooBig {
        /// The largest datagram that fits.
        max: usize,
    },
}

impl core::fmt::Display for BindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BindError::AddrInUse(p) => write!(f, "UDP port {p} is already bound"),
            BindError::NoFreePort => f.write_str("no free ephemeral UDP port"),
            BindError::AddrNotAvailable(a) => write!(f, "{a} is not an address of this stack: bind to one it has"),
        }
    }
}

impl std::error::Error for BindError {}

impl core::fmt::Display for UdpSendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UdpSendError::NotBound => f.write_str("UDP socket is not bound"),
            UdpSendError::WouldBlock => f.write_str("UDP send queue is full"),
            UdpSendError::TooBig { max } => write!(f, "datagram too large: at most {max} bytes fit one IP datagram"),
        }
    }
}

impl std::error::Error for UdpSendError {}

/// Which destination addresses a socket takes datagrams for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocalAddr {
    /// Any of ours, IPv4 or IPv6 (bound to `[::]`, or by port only).
    Any,
    /// Any of our IPv4 addresses (bound to `0.0.0.0`).
    AnyV4,
    /// This one.
    Addr(IpAddr),
}

impl LocalAddr {
    fn accepts(self, dst: IpAddr) -> bool {
        match self {
            LocalAddr::Any => true,
            LocalAddr::AnyV4 => dst.is_ipv4(),
            LocalAddr::Addr(a) => a == dst,
        }
    }
}

/// The sender's address as a reader takes it: any [`SocketAddr`], or
/// [`SocketAddrV4`] for a reader that speaks IPv4 only (an `AF_INET`
/// socket API). An IPv6 datagram that reaches an IPv4-only reader is
/// discarded there and counted (`drop_udp_ipv6_to_ipv4_reader`); bind to
/// `0.0.0.0` so that none arrives.
pub trait UdpPeer: Sized {
    /// `from` as this type, if it can be.
    fn from_sender(from: SocketAddr) -> Option<Self>;
}

impl UdpPeer for SocketAddr {
    fn from_sender(from: SocketAddr) -> Option<Self> {
        Some(from)
    }
}

impl UdpPeer for SocketAddrV4 {
    fn from_sender(from: SocketAddr) -> Option<Self> {
        match from {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        }
    }
}

#[derive(Debug)]
struct UdpSocket {
    local: LocalAddr,
    port: u16,
    rx: PacketQueue<SocketAddr>,
    tx: PacketQueue<SocketAddr>,
    on_tx_list: bool,
    watch: Watch,
}

impl UdpSocket {
    /// READABLE while datagrams wait; WRITABLE while the send queue has room
    /// for another datagram.
    fn readiness(&self) -> Readiness {
        queue_readiness(!self.rx.is_empty(), self.tx.is_full())
    }
}

#[derive(Debug)]
pub(crate) struct UdpSockets {
    slots: Vec<Option<UdpSocket>>,
    free: Vec<u32>,
    by_port: KeyedMap<u16, u32>,
    tx_list: VecDeque<u32>,
    /// Registered sockets with news for `poll_events`.
    events: VecDeque<u32>,
}

impl UdpSockets {
    pub(crate) fn new(hash_key: u64) -> UdpSockets {
        UdpSockets {
            slots: Vec::new(),
            free: Vec::new(),
            by_port: KeyedMap::with_hasher(KeyedState::new(hash_key)),
            tx_list: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn get_ref(&self, h: UdpHandle) -> Option<&UdpSocket> {
        self.slots.get(h.0 as usize).and_then(Option::as_ref)
    }

    fn get(&mut self, h: UdpHandle) -> Option<&mut UdpSocket> {
        self.slots.get_mut(h.0 as usize).and_then(Option::as_mut)
    }

    fn notify(&mut self, idx: u32, new_data: bool) {
        if let Some(s) = self.slots[idx as usize].as_mut() {
            if s.watch.notify(s.readiness(), new_data) {
                self.events.push_back(idx);
            }
        }
    }

    /// Register a socket (see [`Stack::register`]); false if it is not open.
    pub(crate) fn register(&mut self, h: UdpHandle, token: u64, interest: Interest) -> bool {
        let Some(s) = self.get(h) else { return false };
        if s.watch.register(token, interest, s.readiness()) {
            self.events.push_back(h.0);
        }
        true
    }

    pub(crate) fn deregister(&mut self, h: UdpHandle) {
        if let Some(s) = self.get(h) {
            s.watch.registration = None;
        }
    }

    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Move up to `max` events into `out`.
    pub(crate) fn poll_events(&mut self, out: &mut Vec<Event>, max: usize, c: &mut crate::counters::Counters) -> usize {
        let slots = &mut self.slots;
        drain_ready(&mut self.events, out, max, c, |idx| {
            let s = slots[idx as usize].as_mut()?;
            s.watch.take(s.readiness(), Socket::Udp(UdpHandle(idx)))
        })
    }
}

impl Stack {
    /// Bind a dual-stack socket to `port` on every address of ours, IPv4
    /// and IPv6 (0 picks a random free ephemeral port, RFC 6056).
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpHandle, BindError> {
        self.bind_udp(LocalAddr::Any, port)
    }

    /// Bind a socket to `local`: `[::]:port` is dual-stack (as
    /// [`Stack::udp_bind`]), `0.0.0.0:port` takes IPv4 only, and one of our
    /// addresses takes only datagrams sent to it and sends from it.
    pub fn udp_bind_addr(&mut self, local: SocketAddr) -> Result<UdpHandle, BindError> {
        let addr = match local.ip() {
            IpAddr::V6(a) if a.is_unspecified() => LocalAddr::Any,
            IpAddr::V4(a) if a.is_unspecified() => LocalAddr::AnyV4,
            IpAddr::V4(a) if a == self.iface.cfg.ipv4.addr => LocalAddr::Addr(IpAddr::V4(a)),
            IpAddr::V6(a) if self.ipv6().is_some_and(|l| l.addresses().any(|x| x.cidr.addr == a)) => {
                LocalAddr::Addr(IpAddr::V6(a))
            }
            a => return Err(BindError::AddrNotAvailable(a)),
        };
        self.bind_udp(addr, local.port())
    }

    fn bind_udp(&mut self, local: LocalAddr, port: u16) -> Result<UdpHandle, BindError> {
        let port = if port == 0 { self.pick_udp_port()? } else { port };
        if self.udp.by_port.contains_key(&port) {
            return Err(BindError::AddrInUse(port));
        }
        let socket = UdpSocket {
            local,
            port,
            rx: PacketQueue::new(self.iface.cfg.udp_rx_packets, self.iface.cfg.udp_rx_bytes),
            tx: PacketQueue::new(self.iface.cfg.udp_tx_packets, self.iface.cfg.udp_tx_bytes),
            on_tx_list: false,
            watch: Watch::default(),
        };
        let idx = match self.udp.free.pop() {
            Some(i) => {
                self.udp.slots[i as usize] = Some(socket);
                i
            }
            None => {
                self.udp.slots.push(Some(socket));
                (self.udp.slots.len() - 1) as u32
            }
        };
        self.udp.by_port.insert(port, idx);
        Ok(UdpHandle(idx))
    }

    /// RFC 6056 algorithm 1: a random start, then linear search.
    fn pick_udp_port(&mut self) -> Result<u16, BindError> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        let start = self.rng.next_u32() % span;
        (0..span)
            .map(|i| EPHEMERAL.start() + ((start + i) % span) as u16)
            .find(|p| !self.udp.by_port.contains_key(p))
            .ok_or(BindError::NoFreePort)
    }

    /// The port a socket is bound to.
    pub fn udp_local_port(&self, h: UdpHandle) -> Option<u16> {
        self.udp.get_ref(h).map(|s| s.port)
    }

    /// Close a socket; what it had queued is discarded.
    pub fn udp_close(&mut self, h: UdpHandle) {
        if let Some(s) = self.udp.slots.get_mut(h.0 as usize).and_then(Option::take) {
            self.udp.by_port.remove(&s.port);
            self.udp.free.push(h.0);
        }
    }

    /// Queue a datagram to `dst` (IPv4 or IPv6; an IPv4-mapped IPv6
    /// address goes over IPv4); it leaves on the next poll. A destination
    /// the socket cannot reach (IPv6 from a socket bound to `0.0.0.0`, no
    /// IPv6 source address yet) is dropped then and counted (`drop_no_route`).
    pub fn udp_send_to(&mut self, h: UdpHandle, dst: impl Into<SocketAddr>, data: &[u8]) -> Result<(), UdpSendError> {
        let dst = match dst.into() {
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
                None => SocketAddr::V6(a),
            },
            v4 => v4,
        };
        let max = if dst.is_ipv4() { MAX_UDP4_PAYLOAD } else { MAX_UDP6_PAYLOAD };
        if data.len() > max {
            return Err(UdpSendError::TooBig { max });
        }
        let s = self.udp.get(h).ok_or(UdpSendError::NotBound)?;
        if s.tx.push(dst, data).is_err() {
            s.watch.lower(s.readiness() & !Readiness::WRITABLE);
            return Err(UdpSendError::WouldBlock);
        }
        if !s.on_tx_list {
            s.on_tx_list = true;
            self.udp.tx_list.push_back(h.0);
        }
        Ok(())
    }

    /// The next datagram and its sender, copied into `buf`; a datagram larger
    /// than `buf` is truncated (like `recvfrom`), and the full length is returned.
    pub fn udp_recv_from(&mut self, h: UdpHandle, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.udp_recv_with(h, |data, from| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            (data.len(), from)
        })
    }

    /// The next datagram, lent to `f` in place (no copy), with its sender
    /// as a [`SocketAddr`], or as a [`SocketAddrV4`] for an IPv4-only
    /// reader (see [`UdpPeer`]). Finding none re-arms the READABLE event.
    pub fn udp_recv_with<A: UdpPeer, R>(&mut self, h: UdpHandle, f: impl FnOnce(&[u8], A) -> R) -> Option<R> {
        let s = self.udp.slots.get_mut(h.0 as usize).and_then(Option::as_mut)?;
        loop {
            let Some((&from, data)) = s.rx.peek() else {
                s.watch.lower(s.readiness());
                return None;
            };
            let Some(from) = A::from_sender(from) else {
                s.rx.pop();
                self.iface.counters.drop_udp_ipv6_to_ipv4_reader += 1;
                continue;
            };
            let r = f(data, from);
            s.rx.pop();
            return Some(r);
        }
    }

    /// Datagrams waiting to be read.
    pub fn udp_rx_queued(&self, h: UdpHandle) -> usize {
        self.udp.get_ref(h).map_or(0, |s| s.rx.len())
    }
}

/// No socket took a datagram.
struct NoSocket;

impl UdpSockets {
    /// Whether a socket of ours sends from `port` on `addr` (an ICMP error
    /// quoting such a datagram is about us).
    pub(crate) fn sends_from(&self, addr: IpAddr, port: u16) -> bool {
        self.by_port.get(&port).and_then(|&i| self.slots[i as usize].as_ref()).is_some_and(|s| s.local.accepts(addr))
    }

    /// Queue a datagram's payload on the socket bound to `to`; `Err` when
    /// there is none (the caller counts it and answers port unreachable).
    fn deliver(
        &mut self,
        iface: &mut Iface,
        from: SocketAddr,
        to: IpAddr,
        dst_port: u16,
        payload: &[u8],
    ) -> Result<(), NoSocket> {
        let Some(&idx) = self.by_port.get(&dst_port) else { return Err(NoSocket) };
        let s = self.slots[idx as usize].as_mut().expect("port table points at live sockets");
        if !s.local.accepts(to) {
            return Err(NoSocket);
        }
        if s.rx.push(from, payload).is_err() {
            iface.counters.drop_udp_rx_queue_full += 1;
            return Ok(());
        }
        iface.counters.rx_consumed += 1;
        self.notify(idx, true);
        Ok(())
    }

    /// A UDP datagram for us, to its socket's queue; a port nobody bound
    /// gets port unreachable (never a broadcast).
    pub(crate) fn receive<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, d: &Ipv4Delivery<'_>, tx: &mut T) {
        let (ip, datagram, broadcast, meta) = (&d.ip, d.datagram, d.broadcast, d.meta);
        iface.counters.udp_rx += 1;
        // `datagram` is trimmed to the IPv4 total length, so this is the UDP part.
        let l4 = &datagram[datagram.len() - ip.payload_len..];
        let Ok(packet) = UdpPacket::new_checked(l4) else {
            iface.counters.drop_udp_malformed += 1;
            return;
        };
        // A kernel peer on TAP/veth may leave only the pseudo-header sum
        // (CHECKSUM_PARTIAL); the device tells us, and then the data is intact.
        let trusted = (meta.csum_verified || meta.csum_partial) && iface.cfg.use_device_checksums;
        if !trusted && !packet.verify_checksum(ip.src_addr, ip.dst_addr) {
            iface.counters.drop_udp_checksum += 1;
            return;
        }
        let Ok(repr) = UdpRepr::parse(&packet, ip.src_addr, ip.dst_addr, ChecksumMode::Ignore) else {
            iface.counters.drop_udp_malformed += 1;
            return;
        };
        let from = SocketAddr::V4(SocketAddrV4::new(ip.src_addr, repr.src_port));
        if self.deliver(iface, from, IpAddr::V4(ip.dst_addr), repr.dst_port, packet.payload()).is_err() {
            iface.counters.drop_udp_no_socket += 1;
            if !broadcast {
                iface.send_icmp_unreachable(now, ip, datagram, Unreachable::Port, tx);
            }
        }
    }

    /// A UDP datagram over IPv6 (`packet` from its IPv6 header on, as
    /// delivered): to its socket's queue; a port nobody bound gets ICMPv6
    /// port unreachable (RFC 4443 §3.1), within the error rate limit.
    pub(crate) fn receive_ipv6<T: TxQueue>(
        &mut self,
        iface: &mut Iface,
        now: Instant,
        d: &Ipv6Delivery,
        packet: &[u8],
        meta: RxMeta,
        tx: &mut T,
    ) {
        iface.counters.udp_rx += 1;
        let Ok(udp) = UdpPacket::new_checked(upper_layer(d, packet)) else {
            iface.counters.drop_udp_malformed += 1;
            return;
        };
        // RFC 8200 §8.1: "IPv6 receivers must discard UDP packets containing
        // a zero checksum and should log the error."
        if udp.checksum() == 0 {
            iface.counters.drop_udp6_zero_checksum += 1;
            return;
        }
        let trusted = (meta.csum_verified || meta.csum_partial) && iface.cfg.use_device_checksums;
        if !trusted && !udp.verify_checksum(d.src, d.dst) {
            iface.counters.drop_udp_checksum += 1;
            return;
        }
        let from = SocketAddr::V6(SocketAddrV6::new(d.src, udp.src_port(), 0, 0));
        if self.deliver(iface, from, IpAddr::V6(d.dst), udp.dst_port(), udp.payload()).is_err() {
            iface.counters.drop_udp_no_socket += 1;
            if let Some(layer) = iface.ipv6.as_mut() {
                let reason = Icmpv6DstUnreachable::PortUnreachable;
                layer.send_unreachable(now, &mut iface.counters, tx, d, packet, reason);
            }
        }
    }

    /// Send the datagrams the sockets queued, through `iface`.
    #[inline]
    pub(crate) fn transmit<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        // Most polls have nothing queued: stay out of the loop's set-up.
        if !self.tx_list.is_empty() {
            self.transmit_queued(iface, now, tx);
        }
    }

    fn transmit_queued<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        while let Some(idx) = self.tx_list.pop_front() {
            let Some(s) = self.slots[idx as usize].as_mut() else { continue };
            s.on_tx_list = false;
            let (port, local) = (s.port, s.local);
            let mut queue = core::mem::take(&mut s.tx);
            while let Some((&dst, data)) = queue.peek() {
                let repr = UdpRepr { src_port: port, dst_port: dst.port() };
                let sent = match dst {
                    SocketAddr::V4(dst) => send_v4(iface, now, tx, local, repr, *dst.ip(), data),
                    SocketAddr::V6(dst) => send_v6(iface, now, tx, local, repr, *dst.ip(), data),
                };
                if sent {
                    iface.counters.udp_tx += 1;
                }
                queue.pop();
            }
            if let Some(s) = self.slots[idx as usize].as_mut() {
                s.tx = queue;
            }
            // The send queue has room again.
            self.notify(idx, false);
        }
    }
}

/// One datagram over IPv4; false if it did not leave (counted).
fn send_v4<T: TxQueue>(
    iface: &mut Iface,
    now: Instant,
    tx: &mut T,
    local: LocalAddr,
    repr: UdpRepr,
    dst: Ipv4Addr,
    data: &[u8],
) -> bool {
    if !local.accepts(IpAddr::V4(iface.cfg.ipv4.addr)) {
        iface.counters.drop_no_route += 1; // bound to an IPv6 address
        return false;
    }
    let src: Ipv4Addr = iface.cfg.ipv4.addr;
    let sent = iface.send_ipv4(now, tx, dst, IpProtocol::Udp, UDP_HEADER_LEN + data.len(), |b| {
        emit_datagram(b, &repr, src, dst, data);
    });
    sent.is_ok()
}

/// The UDP header and `data` into `b`, with the checksum over `src`/`dst`.
fn emit_datagram<A: PseudoHeader>(b: &mut [u8], repr: &UdpRepr, src: A, dst: A, data: &[u8]) {
    let packet = &mut UdpPacket::new_unchecked(b);
    repr.emit(packet, src, dst, data.len(), |p| p.copy_from_slice(data), ChecksumMode::Verify);
}

/// One datagram over IPv6, from the socket's address or the one source
/// address selection picks; false if it did not leave (counted).
fn send_v6<T: TxQueue>(
    iface: &mut Iface,
    now: Instant,
    tx: &mut T,
    local: LocalAddr,
    repr: UdpRepr,
    dst: Ipv6Addr,
    data: &[u8],
) -> bool {
    let src = match local {
        LocalAddr::Addr(IpAddr::V6(a)) => Some(a),
        LocalAddr::Any => iface.ipv6_source(dst),
        LocalAddr::AnyV4 | LocalAddr::Addr(IpAddr::V4(_)) => None,
    };
    let Some(src) = src else {
        iface.counters.drop_no_route += 1; // IPv4-only socket, or every address still tentative
        return false;
    };
    let tuple = FourTuple {
        local_addr: IpAddr::V6(src),
        local_port: repr.src_port,
        remote_addr: IpAddr::V6(dst),
        remote_port: repr.dst_port,
    };
    let label = iface.flow_label(&tuple);
    let sent = iface.send_ipv6(now, tx, src, dst, IpProtocol::Udp, label, UDP_HEADER_LEN + data.len(), |b| {
        emit_datagram(b, &repr, src, dst, data);
    });
    sent.is_ok()
}
