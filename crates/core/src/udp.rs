//! UDP sockets: bind, send_to, recv_from, with bounded queues both ways.
//!
//! Arriving datagrams are demultiplexed by destination port in a hash table
//! (O(1) per datagram). A socket that queues a datagram to send goes on a
//! transmit list once, so `transmit` visits only sockets with work; a
//! registered socket that becomes ready goes on a ready list, so
//! `poll_events` visits only sockets with news.

use crate::hash::{KeyedMap, KeyedState};
use crate::icmp::Unreachable;
use crate::phy::TxQueue;
use crate::queue::PacketQueue;
use crate::readiness::{drain_ready, queue_readiness, Event, Interest, Readiness, Socket, Watch};
use crate::ip::{Iface, Ipv4Delivery};
use crate::stack::Stack;
use crate::time::Instant;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use ustack_wire::{ChecksumMode, IpProtocol, UdpPacket, UdpRepr, IPV4_HEADER_LEN, UDP_HEADER_LEN};

/// The largest IPv4 datagram (total length is a 16-bit field).
pub(crate) const MAX_IPV4_DATAGRAM: usize = u16::MAX as usize;

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
}

/// Why a send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpSendError {
    /// The handle is not open.
    NotBound,
    /// The send queue is full; try after the next poll.
    WouldBlock,
    /// Larger than an IPv4 datagram can carry; at most `max` bytes fit
    /// (65,507). Datagrams larger than the MTU leave as fragments.
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
        }
    }
}

impl std::error::Error for BindError {}

impl core::fmt::Display for UdpSendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UdpSendError::NotBound => f.write_str("UDP socket is not bound"),
            UdpSendError::WouldBlock => f.write_str("UDP send queue is full"),
            UdpSendError::TooBig { max } => write!(f, "datagram too large: at most {max} bytes fit an IPv4 datagram"),
        }
    }
}

impl std::error::Error for UdpSendError {}

#[derive(Debug)]
struct UdpSocket {
    port: u16,
    rx: PacketQueue<SocketAddrV4>,
    tx: PacketQueue<SocketAddrV4>,
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
        UdpSockets { slots: Vec::new(), free: Vec::new(), by_port: KeyedMap::with_hasher(KeyedState::new(hash_key)), tx_list: VecDeque::new(), events: VecDeque::new() }
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
    /// Bind a socket to `port` (0 picks a random free ephemeral port, RFC 6056).
    pub fn udp_bind(&mut self, port: u16) -> Result<UdpHandle, BindError> {
        let port = if port == 0 { self.pick_udp_port()? } else { port };
        if self.udp.by_port.contains_key(&port) {
            return Err(BindError::AddrInUse(port));
        }
        let socket = UdpSocket {
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

    /// Queue a datagram to `dst`; it leaves on the next poll.
    pub fn udp_send_to(&mut self, h: UdpHandle, dst: SocketAddrV4, data: &[u8]) -> Result<(), UdpSendError> {
        let max = MAX_IPV4_DATAGRAM - IPV4_HEADER_LEN - UDP_HEADER_LEN;
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
    pub fn udp_recv_from(&mut self, h: UdpHandle, buf: &mut [u8]) -> Option<(usize, SocketAddrV4)> {
        self.udp_recv_with(h, |data, from| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            (data.len(), from)
        })
    }

    /// The next datagram, lent to `f` in place (no copy). Finding none
    /// re-arms the READABLE event.
    pub fn udp_recv_with<R>(&mut self, h: UdpHandle, f: impl FnOnce(&[u8], SocketAddrV4) -> R) -> Option<R> {
        let s = self.udp.get(h)?;
        let Some((&from, data)) = s.rx.peek() else {
            s.watch.lower(s.readiness());
            return None;
        };
        let r = f(data, from);
        s.rx.pop();
        Some(r)
    }

    /// Datagrams waiting to be read.
    pub fn udp_rx_queued(&self, h: UdpHandle) -> usize {
        self.udp.get_ref(h).map_or(0, |s| s.rx.len())
    }
}

impl UdpSockets {
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
        let Some(&idx) = self.by_port.get(&repr.dst_port) else {
            iface.counters.drop_udp_no_socket += 1;
            if !broadcast {
                iface.send_icmp_unreachable(now, ip, datagram, Unreachable::Port, tx);
            }
            return;
        };
        let from = SocketAddrV4::new(ip.src_addr, repr.src_port);
        let s = self.slots[idx as usize].as_mut().expect("port table points at live sockets");
        if s.rx.push(from, packet.payload()).is_err() {
            iface.counters.drop_udp_rx_queue_full += 1;
            return;
        }
        iface.counters.rx_consumed += 1;
        self.notify(idx, true);
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
        let src: Ipv4Addr = iface.cfg.ipv4.addr;
        while let Some(idx) = self.tx_list.pop_front() {
            let Some(s) = self.slots[idx as usize].as_mut() else { continue };
            s.on_tx_list = false;
            let port = s.port;
            let mut queue = core::mem::take(&mut s.tx);
            while let Some((&dst, data)) = queue.peek() {
                let repr = UdpRepr { src_port: port, dst_port: dst.port() };
                let sent = iface.send_ipv4(now, tx, *dst.ip(), IpProtocol::Udp, UDP_HEADER_LEN + data.len(), |b| {
                    let payload_len = data.len();
                    repr.emit(&mut UdpPacket::new_unchecked(b), src, *dst.ip(), payload_len, |p| p.copy_from_slice(data), ChecksumMode::Verify);
                });
                if sent.is_ok() {
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
