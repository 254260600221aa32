//! ICMPv4: echo replies, ping sockets, and rate-limited error messages.

use crate::phy::TxQueue;
use crate::queue::PacketQueue;
use crate::readiness::{drain_ready, queue_readiness, Event, Interest, Readiness, Socket, Watch};
use crate::counters::Counters;
use crate::ip::{Iface, Ipv4Delivery};
use crate::stack::Stack;
use crate::time::Instant;
use std::net::Ipv4Addr;
use ustack_wire::{checksum, ChecksumMode, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Repr, IPV4_HEADER_LEN};

/// The ICMP header bytes before the echo data or the quoted datagram.
const ICMP_HEADER_LEN: usize = 8;
/// RFC 792: an error quotes the offending IP header and its first 64 bits.
const ICMP_QUOTE_PAYLOAD: usize = 8;
/// The echo request type (RFC 792).
const ECHO_REQUEST: u8 = 8;

/// Destination-unreachable codes we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Protocol = 2,
    Port = 3,
}

/// A token bucket: `rate` per second sustained, `burst` back to back.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: u32,
    burst: u32,
    /// Tokens scaled by 1e6 so refills per microsecond stay integral.
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket { rate, burst, tokens: u64::from(burst) * 1_000_000, last: Instant::ZERO }
    }

    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_since(self.last).as_micros().min(u128::from(u32::MAX)) as u64;
        self.last = self.last.max(now);
        let cap = u64::from(self.burst) * 1_000_000;
        self.tokens = (self.tokens + elapsed * u64::from(self.rate)).min(cap);
        if self.tokens >= 1_000_000 {
            self.tokens -= 1_000_000;
            true
        } else {
            false
        }
    }
}

/// A ping socket: sends echo requests with its identifier and receives the
/// matching replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PingHandle(u16);

/// An echo reply as a ping socket reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoReply {
    /// Who answered.
    pub from: Ipv4Addr,
    /// The sequence number of the request answered.
    pub seq_no: u16,
    /// Bytes of echo data (the data itself is copied to the caller's buffer).
    pub len: usize,
}

/// Why a ping could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingError {
    /// The handle is not open.
    NotOpen,
    /// The send queue is full; try after the next poll.
    WouldBlock,
    /// Larger than an IPv4 datagram can carry; at most `max` bytes of data
    /// fit (65,507). Larger than the MTU is fine: it leaves as fragments.
    TooBig {
        /// The most echo data that fits.
        max: usize,
    },
    /// Another ping socket uses this identifier.
    IdentInUse,
}

impl core::fmt::Display for PingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PingError::NotOpen => f.write_str("ping socket is not open"),
            PingError::WouldBlock => f.write_str("ping send queue is full"),
            PingError::TooBig { max } => write!(f, "echo data too large: at most {max} bytes fit an IPv4 datagram"),
            PingError::IdentInUse => f.write_str("another ping socket uses this identifier"),
        }
    }
}

impl std::error::Error for PingError {}

#[derive(Debug)]
struct PingSocket {
    ident: u16,
    rx: PacketQueue<(Ipv4Addr, u16)>,
    tx: PacketQueue<(Ipv4Addr, u16)>,
    watch: Watch,
}

impl PingSocket {
    /// READABLE while replies wait; WRITABLE while the send queue has room.
    fn readiness(&self) -> Readiness {
        queue_readiness(!self.rx.is_empty(), self.tx.is_full())
    }
}

/// Few ping sockets exist, so a short list is the right structure.
#[derive(Debug, Default)]
pub(crate) struct PingSockets {
    sockets: Vec<PingSocket>,
    /// Registered sockets (by identifier) with news for `poll_events`.
    events: std::collections::VecDeque<u16>,
}

impl PingSockets {
    fn by_ident(&mut self, ident: u16) -> Option<&mut PingSocket> {
        self.sockets.iter_mut().find(|s| s.ident == ident)
    }

    fn notify(&mut self, ident: u16, new_data: bool) {
        let Some(s) = self.sockets.iter_mut().find(|s| s.ident == ident) else { return };
        if s.watch.notify(s.readiness(), new_data) {
            self.events.push_back(ident);
        }
    }

    /// Register a socket (see [`Stack::register`]); false if it is not open.
    pub(crate) fn register(&mut self, h: PingHandle, token: u64, interest: Interest) -> bool {
        let Some(s) = self.by_ident(h.0) else { return false };
        if s.watch.register(token, interest, s.readiness()) {
            self.events.push_back(h.0);
        }
        true
    }

    pub(crate) fn deregister(&mut self, h: PingHandle) {
        if let Some(s) = self.by_ident(h.0) {
            s.watch.registration = None;
        }
    }

    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Move up to `max` events into `out`.
    pub(crate) fn poll_events(&mut self, out: &mut Vec<Event>, max: usize, c: &mut crate::counters::Counters) -> usize {
        let sockets = &mut self.sockets;
        drain_ready(&mut self.events, out, max, c, |ident| {
            let s = sockets.iter_mut().find(|s| s.ident == ident)?;
            s.watch.take(s.readiness(), Socket::Ping(PingHandle(ident)))
        })
    }
}

/// What the IP layer's ICMP input hands up.
pub(crate) enum IcmpInput<'a> {
    /// Answered, dropped or ignored here, and counted.
    Done,
    /// An echo reply, for the ping socket with `ident`.
    EchoReply { ident: u16, seq_no: u16, data: &'a [u8] },
    /// Destination unreachable, "fragmentation needed and DF set", quoting
    /// `header` and the first bytes of its payload.
    FragNeeded { next_hop_mtu: u16, header: Ipv4Repr, data: &'a [u8] },
}

impl Iface {
    /// An ICMP message for us: echo requests are answered here, what the
    /// sockets and path MTU discovery need is handed up.
    pub(crate) fn receive_icmp<'a, T: TxQueue>(
        &mut self,
        now: Instant,
        d: &Ipv4Delivery<'a>,
        tx: &mut T,
    ) -> IcmpInput<'a> {
        let (ip, l4, broadcast, meta) = (&d.ip, d.l4, d.broadcast, d.meta);
        self.counters.icmp_rx += 1;
        let Ok(packet) = Icmpv4Packet::new_checked(l4) else {
            self.counters.drop_icmp_malformed += 1;
            return IcmpInput::Done;
        };
        let trusted = meta.csum_verified && self.cfg.use_device_checksums;
        if !trusted && !packet.verify_checksum() {
            self.counters.drop_icmp_checksum += 1;
            return IcmpInput::Done;
        }
        let Ok(repr) = Icmpv4Repr::parse(&packet, ChecksumMode::Ignore) else {
            self.counters.drop_icmp_malformed += 1;
            return IcmpInput::Done;
        };
        match repr {
            // Like Linux's icmp_echo_ignore_broadcasts=1: a broadcast ping is
            // an amplification vector, not a question.
            // An echo request with a non-zero code is still an echo request
            // (RFC 792 defines none, and Linux's icmp_echo answers whatever the
            // code), so it parses as `Other` and is answered here too.
            Icmpv4Repr::EchoRequest { .. } | Icmpv4Repr::Other { msg_type: ECHO_REQUEST, .. } if broadcast => {
                self.counters.drop_icmp_ignored += 1;
            }
            Icmpv4Repr::EchoRequest { .. } | Icmpv4Repr::Other { msg_type: ECHO_REQUEST, .. } => {
                // The reply is the request with type 0 and the code kept (as
                // Linux does): copy it and patch the checksum incrementally
                // (RFC 1624) instead of summing again.
                let message = packet.into_inner();
                let old = u16::from_be_bytes([message[2], message[3]]);
                let code = u16::from(message[1]);
                let sum = checksum::update(old, u16::from(ECHO_REQUEST) << 8 | code, code);
                let sent = self.send_ipv4(now, tx, ip.src_addr, IpProtocol::Icmp, message.len(), |b| {
                    b.copy_from_slice(message);
                    b[0] = 0;
                    b[2..4].copy_from_slice(&sum.to_be_bytes());
                });
                // Answered: the request is used even if the reply could not
                // leave (that loss has an egress counter of its own).
                self.counters.rx_consumed += 1;
                if sent.is_ok() {
                    self.counters.icmp_echo_replies_sent += 1;
                }
            }
            Icmpv4Repr::EchoReply { ident, seq_no, data } => return IcmpInput::EchoReply { ident, seq_no, data },
            Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::FragRequired { next_hop_mtu },
                header,
                data,
            } => return IcmpInput::FragNeeded { next_hop_mtu, header, data },
            _ => self.counters.drop_icmp_ignored += 1,
        }
        IcmpInput::Done
    }
}

impl PingSockets {
    /// An echo reply to the socket with `ident`, or counted as unwanted.
    pub(crate) fn receive_reply(&mut self, c: &mut Counters, from: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) {
        let queued = match self.by_ident(ident) {
            Some(s) => s.rx.push((from, seq_no), data).is_ok(),
            None => false,
        };
        if queued {
            c.rx_consumed += 1;
            self.notify(ident, true);
        } else {
            c.drop_icmp_echo_reply_unwanted += 1;
        }
    }
}

impl Stack {
    /// Open a ping socket sending and receiving echoes with identifier `ident`.
    pub fn ping_open(&mut self, ident: u16) -> Result<PingHandle, PingError> {
        if self.ping.by_ident(ident).is_some() {
            return Err(PingError::IdentInUse);
        }
        let n = self.iface.cfg.ping_rx_packets;
        let bytes = n * self.iface.cfg.mtu;
        self.ping.sockets.push(PingSocket {
            ident,
            rx: PacketQueue::new(n, bytes),
            tx: PacketQueue::new(n, bytes),
            watch: Watch::default(),
        });
        Ok(PingHandle(ident))
    }

    /// Close a ping socket; replies for it are dropped from now on.
    pub fn ping_close(&mut self, h: PingHandle) {
        self.ping.sockets.retain(|s| s.ident != h.0);
    }

    /// Queue an echo request to `dst`; it leaves on the next poll.
    pub fn ping_send(&mut self, h: PingHandle, dst: Ipv4Addr, seq_no: u16, data: &[u8]) -> Result<(), PingError> {
        let max = crate::udp::MAX_IPV4_DATAGRAM - IPV4_HEADER_LEN - ICMP_HEADER_LEN;
        if data.len() > max {
            return Err(PingError::TooBig { max });
        }
        let s = self.ping.by_ident(h.0).ok_or(PingError::NotOpen)?;
        if s.tx.push((dst, seq_no), data).is_err() {
            s.watch.lower(s.readiness() & !Readiness::WRITABLE);
            return Err(PingError::WouldBlock);
        }
        Ok(())
    }

    /// The next echo reply, its data copied into `buf` (truncated to fit).
    /// Finding none re-arms the READABLE event.
    pub fn ping_recv(&mut self, h: PingHandle, buf: &mut [u8]) -> Option<EchoReply> {
        let s = self.ping.by_ident(h.0)?;
        let Some((&(from, seq_no), data)) = s.rx.peek() else {
            s.watch.lower(s.readiness());
            return None;
        };
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let reply = EchoReply { from, seq_no, len: data.len() };
        s.rx.pop();
        Some(reply)
    }
}

impl PingSockets {
    /// Send the echo requests the sockets queued, through `iface`.
    #[inline]
    pub(crate) fn transmit<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        // Most stacks have no ping socket: stay out of the loop's set-up.
        if !self.sockets.is_empty() {
            self.transmit_queued(iface, now, tx);
        }
    }

    fn transmit_queued<T: TxQueue>(&mut self, iface: &mut Iface, now: Instant, tx: &mut T) {
        for i in 0..self.sockets.len() {
            if self.sockets[i].tx.is_empty() {
                continue;
            }
            // Take the queue out so it and the stack can be borrowed at once.
            let mut queue = core::mem::take(&mut self.sockets[i].tx);
            let ident = self.sockets[i].ident;
            while let Some((&(dst, seq_no), data)) = queue.peek() {
                let _ = iface.send_ipv4(now, tx, dst, IpProtocol::Icmp, ICMP_HEADER_LEN + data.len(), |b| {
                    let repr = Icmpv4Repr::EchoRequest { ident, seq_no, data };
                    repr.emit(&mut Icmpv4Packet::new_unchecked(b), ChecksumMode::Verify);
                });
                queue.pop();
            }
            let s = &mut self.sockets[i];
            s.tx = queue;
            // The send queue has room again.
            if s.watch.notify(s.readiness(), false) {
                self.events.push_back(s.ident);
            }
        }
    }
}

impl Iface {
    /// Answer a datagram nobody wanted with destination unreachable,
    /// rate-limited. `datagram` is the whole offending IP packet.
    pub(crate) fn send_icmp_unreachable<T: TxQueue>(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        datagram: &[u8],
        code: Unreachable,
        tx: &mut T,
    ) {
        self.send_icmp_error(now, ip.src_addr, datagram, [3, code as u8], [0; 4], tx);
    }

    /// Send ICMP error `kind` (type, code) with the 4 bytes `rest` (a
    /// parameter problem's pointer, ...) to `to`, quoting `datagram`'s
    /// header and first 8 bytes; rate-limited with the other errors.
    pub(crate) fn send_icmp_error<T: TxQueue>(
        &mut self,
        now: Instant,
        to: Ipv4Addr,
        datagram: &[u8],
        kind: [u8; 2],
        rest: [u8; 4],
        tx: &mut T,
    ) {
        if !self.icmp_errors.take(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return;
        }
        let header_len = usize::from(datagram.first().map_or(5, |b| b & 0x0f)) * 4;
        let quote = &datagram[..datagram.len().min(header_len + ICMP_QUOTE_PAYLOAD).max(IPV4_HEADER_LEN.min(datagram.len()))];
        let sent = self.send_ipv4(now, tx, to, IpProtocol::Icmp, ICMP_HEADER_LEN + quote.len(), |b| {
            b[..ICMP_HEADER_LEN].copy_from_slice(&[kind[0], kind[1], 0, 0, rest[0], rest[1], rest[2], rest[3]]);
            b[ICMP_HEADER_LEN..].copy_from_slice(quote);
            let sum = checksum::finish(checksum::sum(b));
            b[2..4].copy_from_slice(&sum.to_be_bytes());
        });
        if sent.is_ok() {
            self.counters.icmp_errors_sent += 1;
        }
    }
}
